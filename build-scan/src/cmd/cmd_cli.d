build-scan/src/cmd/cmd_cli.o: src/cmd/cmd_cli.c src/agent/detect.h \
 src/agent/engines.h src/base/err.h src/base/buf.h src/base/json.h \
 src/base/mem.h src/base/util.h src/checks/checks.h src/cmd/cli.h \
 src/cmd/cmd.h src/http/client.h
src/agent/detect.h:
src/agent/engines.h:
src/base/err.h:
src/base/buf.h:
src/base/json.h:
src/base/mem.h:
src/base/util.h:
src/checks/checks.h:
src/cmd/cli.h:
src/cmd/cmd.h:
src/http/client.h:
