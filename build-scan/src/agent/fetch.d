build-scan/src/agent/fetch.o: src/agent/fetch.c src/agent/fetch.h \
 src/base/err.h src/sched/estimate.h src/sched/gguf.h src/base/mem.h \
 src/base/secret.h
src/agent/fetch.h:
src/base/err.h:
src/sched/estimate.h:
src/sched/gguf.h:
src/base/mem.h:
src/base/secret.h:
