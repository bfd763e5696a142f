build-scan/src/http/client.o: src/http/client.c src/http/client.h \
 src/base/buf.h src/base/err.h src/base/json.h src/base/mem.h
src/http/client.h:
src/base/buf.h:
src/base/err.h:
src/base/json.h:
src/base/mem.h:
