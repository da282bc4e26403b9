# Ten one-second jobs for GNU make under the CUSE jobserver. Each records its start and end on a
# monotonic clock (vmtest stamp); the suite then checks how many ever ran at once.
JOBS := j01 j02 j03 j04 j05 j06 j07 j08 j09 j10
all: $(JOBS)
$(JOBS):
	@$(VT) stamp $(LOG) S $@; sleep 1; $(VT) stamp $(LOG) E $@
.PHONY: all $(JOBS)
