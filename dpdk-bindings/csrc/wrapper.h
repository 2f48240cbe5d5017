/* The DPDK API rvs uses. bindgen reads this; the generated static-inline wrappers include it. */
#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>
#include <rte_eth_ring.h>

/* C thread-locals and macros that bindgen cannot reach (see csrc/helpers.c). */
int rvs_rte_errno(void);
unsigned rvs_lcore_id(void);
