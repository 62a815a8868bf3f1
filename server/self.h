/* self.h - who this xapid is: the host row it runs for and its state
 * directory, set once at start-up and read everywhere. */
#ifndef XA_SELF_H
#define XA_SELF_H

/* Borrowed; "OpaqueRef:NULL" before start-up has set it. */
const char *xa_self_host(void);
void xa_self_set_host(const char *ref);
const char *xa_self_state_dir(void);
void xa_self_set_state_dir(const char *dir);

#endif
