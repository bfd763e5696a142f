build-scan/src/agent/modelfile.o: src/agent/modelfile.c \
 src/agent/modelfile.h src/base/err.h src/sched/estimate.h \
 src/sched/gguf.h src/base/mem.h src/base/util.h
src/agent/modelfile.h:
src/base/err.h:
src/sched/estimate.h:
src/sched/gguf.h:
src/base/mem.h:
src/base/util.h:
