build-scan/src/base/sse.o: src/base/sse.c src/base/sse.h src/base/buf.h \
 src/base/err.h
src/base/sse.h:
src/base/buf.h:
src/base/err.h:
