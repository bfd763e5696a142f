build-scan/src/api/workers.o: src/api/workers.c src/agent/report.h \
 src/api/internal.h src/api/app.h src/base/map.h src/base/secret.h \
 src/http/server.h src/base/err.h src/base/json.h src/base/log.h \
 src/base/mem.h src/base/util.h src/checks/checks.h src/http/probe.h \
 src/store/store.h
src/agent/report.h:
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
src/checks/checks.h:
src/http/probe.h:
src/store/store.h:
