build-scan/src/api/auth.o: src/api/auth.c src/api/internal.h \
 src/api/app.h src/base/map.h src/base/secret.h src/http/server.h \
 src/base/err.h src/base/json.h src/base/log.h src/base/mem.h \
 src/base/util.h src/http/workpool.h src/store/store.h
src/api/internal.h:
src/api/app.h:
src/base/map.h:
src/base/secret.h:
src/http/server.h:
src/base/err.h:
src/base/json.h:
src/base/log.h:
src/base/mem.h:
src/base/util.h:
src/http/workpool.h:
src/store/store.h:
