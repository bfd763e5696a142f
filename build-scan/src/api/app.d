build-scan/src/api/app.o: src/api/app.c src/api/internal.h src/api/app.h \
 src/base/map.h src/base/secret.h src/http/server.h src/base/err.h \
 src/base/log.h src/base/mem.h src/base/util.h src/http/relay.h \
 src/store/store.h
src/api/internal.h:
src/api/app.h:
src/base/map.h:
src/base/secret.h:
src/http/server.h:
src/base/err.h:
src/base/log.h:
src/base/mem.h:
src/base/util.h:
src/http/relay.h:
src/store/store.h:
