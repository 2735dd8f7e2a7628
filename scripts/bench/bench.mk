# Benchmark programs (plain C over sockets: they run the same over the
# kernel and under nuse run).
BENCH_CFLAGS := -O2 -g -Wall -Wextra -Werror

build: $(BIN)/tcpperf $(BIN)/ringlat

$(BIN)/ringlat: scripts/bench/ringlat.c
	@mkdir -p $(BIN)
	$(CC) $(BENCH_CFLAGS) -o $@ $<

$(BIN)/tcpperf: scripts/bench/tcpperf.c
	@mkdir -p $(BIN)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -lm
