build-scan/src/agent/detect_amd.o: src/agent/detect_amd.c \
 src/agent/detect.h src/base/mem.h src/base/util.h
src/agent/detect.h:
src/base/mem.h:
src/base/util.h:
