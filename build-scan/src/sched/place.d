build-scan/src/sched/place.o: src/sched/place.c src/sched/place.h \
 src/checks/checks.h src/sched/estimate.h src/base/err.h src/sched/gguf.h \
 src/base/json.h src/base/mem.h src/base/util.h
src/sched/place.h:
src/checks/checks.h:
src/sched/estimate.h:
src/base/err.h:
src/sched/gguf.h:
src/base/json.h:
src/base/mem.h:
src/base/util.h:
