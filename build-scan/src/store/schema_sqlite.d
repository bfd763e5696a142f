build-scan/src/store/schema_sqlite.o: src/store/schema_sqlite.c \
 src/store/schema.h
src/store/schema.h:
