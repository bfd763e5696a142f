build-scan/src/agent/files.o: src/agent/files.c src/agent/files.h \
 src/agent/fetch.h src/base/err.h src/sched/estimate.h src/sched/gguf.h \
 src/agent/modelfile.h src/base/json.h src/base/log.h src/base/mem.h \
 src/base/util.h
src/agent/files.h:
src/agent/fetch.h:
src/base/err.h:
src/sched/estimate.h:
src/sched/gguf.h:
src/agent/modelfile.h:
src/base/json.h:
src/base/log.h:
src/base/mem.h:
src/base/util.h:
