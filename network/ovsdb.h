/* ovsdb.h - a small OVSDB client: JSON-RPC (RFC 7047) over a unix socket.
 *
 * One connection, used by one request at a time (a mutex inside), opened
 * on first use and again after any failure: a restarted ovsdb-server is
 * picked up by the next call, which is why callers can simply retry.
 * Every wait is bounded by the client's timeout, so a dead or wedged
 * server turns into an error, never a hung API call.  The server's
 * "echo" probes are answered while waiting for a reply. */
#ifndef XA_OVSDB_H
#define XA_OVSDB_H

#include <json-c/json.h>
#include <stdbool.h>

#include "error.h"

struct xa_ovsdb;

/* 'remote' is "unix:PATH" (copied).  'timeout' bounds each connect and
 * each request, in seconds.  Does not connect yet. */
struct xa_ovsdb *xa_ovsdb_new(const char *remote, double timeout);
void xa_ovsdb_free(struct xa_ovsdb *db);

/* Runs one transaction on database 'Open_vSwitch'.  'ops' (taken) is the
 * array of operations.  On success '*ret' receives the array of results
 * (caller puts it; 'ret' NULL: the results are not wanted).  A failed operation
 * (an "error" member in any result) is an error naming it; so is a broken
 * connection, after which the next call reconnects. */
struct xa_error *xa_ovsdb_transact(struct xa_ovsdb *db, json_object *ops,
                                   json_object **ret) XA_WARN_UNUSED;

/* Connects if not connected.  NULL when the server answers. */
struct xa_error *xa_ovsdb_ping(struct xa_ovsdb *db) XA_WARN_UNUSED;

/* Counts successful connections: a change tells the caller the server
 * may have lost state (restarted) and a full resync is due. */
unsigned xa_ovsdb_epoch(struct xa_ovsdb *db);

/* Helpers for building operations. */
/* ["set", [a, b, ...]] of strings (NULL-terminated). */
json_object *xa_ovsdb_str_set(const char *const *items);
/* ["map", [[k, v], ...]] from a NULL-terminated k, v, k, v, ... list. */
json_object *xa_ovsdb_map(const char *const *kv);
/* ["uuid", u] / ["named-uuid", n]. */
json_object *xa_ovsdb_uuid(const char *kind, const char *u);
/* [[column, "==", value]] with a string value. */
json_object *xa_ovsdb_where_eq(const char *column, const char *value);

/* Reads a string-map column value (["map", [[k, v]...]]): the value of
 * 'key' or NULL (borrowed). */
const char *xa_ovsdb_map_get(json_object *map, const char *key);

#endif
