build-scan/src/http/fetch.o: src/http/fetch.c src/http/fetch.h \
 src/base/mem.h
src/http/fetch.h:
src/base/mem.h:
