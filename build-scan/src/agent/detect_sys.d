build-scan/src/agent/detect_sys.o: src/agent/detect_sys.c \
 src/agent/detect.h src/base/err.h src/base/mem.h src/base/util.h
src/agent/detect.h:
src/base/err.h:
src/base/mem.h:
src/base/util.h:
