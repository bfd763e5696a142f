build-scan/src/cmd/cmd_worker.o: src/cmd/cmd_worker.c src/agent/agent.h \
 src/base/err.h src/base/mem.h src/base/util.h src/cmd/cmd.h
src/agent/agent.h:
src/base/err.h:
src/base/mem.h:
src/base/util.h:
src/cmd/cmd.h:
