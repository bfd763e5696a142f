build-scan/src/agent/diagnose.o: src/agent/diagnose.c \
 src/agent/diagnose.h
src/agent/diagnose.h:
