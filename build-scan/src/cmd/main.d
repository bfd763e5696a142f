build-scan/src/cmd/main.o: src/cmd/main.c src/base/err.h src/base/log.h \
 src/base/secret.h src/cmd/cmd.h src/http/client.h
src/base/err.h:
src/base/log.h:
src/base/secret.h:
src/cmd/cmd.h:
src/http/client.h:
