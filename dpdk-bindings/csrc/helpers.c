/* Accessors for DPDK thread-locals, which Rust cannot name directly. */
#include "wrapper.h"

int rvs_rte_errno(void) { return rte_errno; }
unsigned rvs_lcore_id(void) { return rte_lcore_id(); }
