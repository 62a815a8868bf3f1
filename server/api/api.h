/* api.h - start-up of the hand-written API modules: each registers its
 * overrides of implicit messages (xa_implicit_override) and any HTTP
 * routes before the server starts serving. */
#ifndef XA_API_H
#define XA_API_H

void xa_api_init(void);
/* CONNECT /console (console_http.c). */
void xa_console_http_init(void);

#endif
