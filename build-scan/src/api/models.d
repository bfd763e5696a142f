build-scan/src/api/models.o: src/api/models.c src/api/internal.h \
 src/api/app.h src/base/map.h src/base/secret.h src/http/server.h \
 src/agent/report.h src/api/model_spec.h src/base/err.h src/base/util.h \
 src/sched/estimate.h src/sched/gguf.h src/base/json.h src/base/log.h \
 src/base/mem.h src/checks/checks.h src/http/fetch.h src/sched/place.h \
 src/store/store.h
src/api/internal.h:
src/api/app.h:
src/base/map.h:
src/base/secret.h:
src/http/server.h:
src/agent/report.h:
src/api/model_spec.h:
src/base/err.h:
src/base/util.h:
src/sched/estimate.h:
src/sched/gguf.h:
src/base/json.h:
src/base/log.h:
src/base/mem.h:
src/checks/checks.h:
src/http/fetch.h:
src/sched/place.h:
src/store/store.h:
