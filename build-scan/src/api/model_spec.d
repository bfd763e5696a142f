build-scan/src/api/model_spec.o: src/api/model_spec.c \
 src/api/model_spec.h src/base/err.h src/base/util.h src/sched/estimate.h \
 src/sched/gguf.h src/base/json.h src/base/mem.h
src/api/model_spec.h:
src/base/err.h:
src/base/util.h:
src/sched/estimate.h:
src/sched/gguf.h:
src/base/json.h:
src/base/mem.h:
