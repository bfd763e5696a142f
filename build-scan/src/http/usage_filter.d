build-scan/src/http/usage_filter.o: src/http/usage_filter.c \
 src/http/usage_filter.h src/base/json.h
src/http/usage_filter.h:
src/base/json.h:
