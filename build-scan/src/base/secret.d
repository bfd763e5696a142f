build-scan/src/base/secret.o: src/base/secret.c src/base/secret.h \
 src/base/mem.h
src/base/secret.h:
src/base/mem.h:
