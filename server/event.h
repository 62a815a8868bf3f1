/* event.h - event.from / event.next over the database's generations.
 *
 * A waiting event.from holds no thread: the call is deferred (its HTTP
 * connection suspended) and parked on a waiter list; one event thread
 * wakes it when a commit produces a matching change or its timeout
 * passes. */
#ifndef XA_EVENT_H
#define XA_EVENT_H

void xa_event_start(void);
void xa_event_stop(void);
/* Answers any waiter of 'session_ref' with SESSION_INVALID. */
void xa_event_session_gone(const char *session_ref);

#endif
