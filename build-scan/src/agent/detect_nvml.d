build-scan/src/agent/detect_nvml.o: src/agent/detect_nvml.c \
 src/agent/detect.h src/agent/nvml_abi.h
src/agent/detect.h:
src/agent/nvml_abi.h:
