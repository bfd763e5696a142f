build-scan/src/cmd/cli_util.o: src/cmd/cli_util.c src/base/err.h \
 src/base/json.h src/base/mem.h src/base/util.h src/cmd/cli.h \
 src/http/client.h
src/base/err.h:
src/base/json.h:
src/base/mem.h:
src/base/util.h:
src/cmd/cli.h:
src/http/client.h:
