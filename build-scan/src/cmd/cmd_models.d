build-scan/src/cmd/cmd_models.o: src/cmd/cmd_models.c \
 src/agent/modelfile.h src/base/err.h src/sched/estimate.h \
 src/sched/gguf.h src/base/json.h src/base/mem.h src/base/buf.h \
 src/base/sse.h src/http/client.h src/base/util.h src/cmd/cli.h \
 src/cmd/cmd.h
src/agent/modelfile.h:
src/base/err.h:
src/sched/estimate.h:
src/sched/gguf.h:
src/base/json.h:
src/base/mem.h:
src/base/buf.h:
src/base/sse.h:
src/http/client.h:
src/base/util.h:
src/cmd/cli.h:
src/cmd/cmd.h:
