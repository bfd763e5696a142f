build-scan/src/store/store_sqlite.o: src/store/store_sqlite.c \
 src/base/err.h src/base/mem.h src/store/schema.h src/store/store.h
src/base/err.h:
src/base/mem.h:
src/store/schema.h:
src/store/store.h:
