build-scan/src/api/gateway.o: src/api/gateway.c src/api/internal.h \
 src/api/app.h src/base/map.h src/base/secret.h src/http/server.h \
 src/base/err.h src/base/json.h src/base/log.h src/base/mem.h \
 src/base/util.h src/http/relay.h src/http/usage_filter.h
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
src/http/relay.h:
src/http/usage_filter.h:
