/* sim.c - the simulated network backend: bridges and ports in memory.
 *
 * For the quickstart and the scale tests: it accepts everything the OVS
 * backend would and remembers it (so list_owned() works the same), but
 * touches nothing on the host.  State is lost at exit, as a reboot would
 * lose a real switch's; the next start replays it. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "network/net-driver.h"
#include "util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct xa_hmap bridges; /* name -> (void *)1 */
static struct xa_hmap ports;   /* name -> spec (owned string) */

static struct xa_error *
sim_init(const char *remote, const char *datapath)
{
    XA_UNUSED(remote);
    XA_UNUSED(datapath);
    return NULL;
}

static void
sim_fini(void)
{
    pthread_mutex_lock(&lock);
    xa_hmap_clear(&bridges, NULL);
    xa_hmap_clear(&ports, free);
    pthread_mutex_unlock(&lock);
}

static struct xa_error *
sim_ping(void)
{
    return NULL;
}

static unsigned
sim_epoch(void)
{
    return 1;
}

static struct xa_error *
sim_ensure_bridge(const struct xa_net_bridge *b)
{
    pthread_mutex_lock(&lock);
    xa_hmap_put(&bridges, b->name, (void *)1);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static struct xa_error *
sim_remove_bridge(const char *name)
{
    pthread_mutex_lock(&lock);
    xa_hmap_remove(&bridges, name);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static struct xa_error *
sim_put_port(const struct xa_net_port *p)
{
    struct xa_error *err = NULL;
    pthread_mutex_lock(&lock);
    if (!xa_hmap_contains(&bridges, p->bridge)) {
        err = xa_error_internal("no bridge %s for port %s", p->bridge, p->name);
    } else {
        free(xa_hmap_put(&ports, p->name, xa_strdup(p->spec ? p->spec : "")));
    }
    pthread_mutex_unlock(&lock);
    return err;
}

static struct xa_error *
sim_remove_port(const char *name)
{
    pthread_mutex_lock(&lock);
    free(xa_hmap_remove(&ports, name));
    pthread_mutex_unlock(&lock);
    return NULL;
}

static struct xa_error *
sim_list_owned(struct xa_net_owned *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&lock);
    out->bridges = xa_malloc((xa_hmap_count(&bridges) + 1) * sizeof(char *));
    XA_HMAP_FOR_EACH (s, &bridges) {
        out->bridges[out->n_bridges++] = xa_strdup(s->key);
    }
    size_t n = xa_hmap_count(&ports) + 1;
    out->ports = xa_malloc(n * sizeof(char *));
    out->port_specs = xa_malloc(n * sizeof(char *));
    XA_HMAP_FOR_EACH (s, &ports) {
        out->port_specs[out->n_ports] = xa_strdup(s->val);
        out->ports[out->n_ports++] = xa_strdup(s->key);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

const struct xa_net_driver xa_net_sim_driver = {
    .name = "sim",
    .init = sim_init,
    .fini = sim_fini,
    .ping = sim_ping,
    .epoch = sim_epoch,
    .ensure_bridge = sim_ensure_bridge,
    .remove_bridge = sim_remove_bridge,
    .put_port = sim_put_port,
    .remove_port = sim_remove_port,
    .list_owned = sim_list_owned,
};
