build-scan/src/agent/report.o: src/agent/report.c src/agent/report.h
src/agent/report.h:
