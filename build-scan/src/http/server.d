build-scan/src/http/server.o: src/http/server.c src/http/server.h \
 src/http/server_impl.h src/base/err.h src/base/json.h src/base/log.h \
 src/base/map.h src/base/mem.h src/base/util.h
src/http/server.h:
src/http/server_impl.h:
src/base/err.h:
src/base/json.h:
src/base/log.h:
src/base/map.h:
src/base/mem.h:
src/base/util.h:
