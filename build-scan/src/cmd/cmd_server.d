build-scan/src/cmd/cmd_server.o: src/cmd/cmd_server.c src/api/app.h \
 src/base/err.h src/base/log.h src/base/mem.h src/base/util.h \
 src/http/server.h src/cmd/cmd.h
src/api/app.h:
src/base/err.h:
src/base/log.h:
src/base/mem.h:
src/base/util.h:
src/http/server.h:
src/cmd/cmd.h:
