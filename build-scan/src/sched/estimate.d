build-scan/src/sched/estimate.o: src/sched/estimate.c \
 src/sched/estimate.h src/base/err.h src/sched/gguf.h src/base/mem.h
src/sched/estimate.h:
src/base/err.h:
src/sched/gguf.h:
src/base/mem.h:
