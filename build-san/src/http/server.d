build-san/src/http/server.o: src/http/server.c src/http/server.h \
 src/base/err.h src/base/json.h src/base/log.h src/base/mem.h
src/http/server.h:
src/base/err.h:
src/base/json.h:
src/base/log.h:
src/base/mem.h:
