build-scan/src/http/workpool.o: src/http/workpool.c src/http/workpool.h \
 src/base/mem.h
src/http/workpool.h:
src/base/mem.h:
