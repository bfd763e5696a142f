build-scan/src/checks/checks.o: src/checks/checks.c src/checks/checks.h \
 src/base/json.h src/base/mem.h
src/checks/checks.h:
src/base/json.h:
src/base/mem.h:
