/* The connection to an ssh:// repository's server (fs.c sends the requests):
 * ssh started with two pipes, the server greeted, messages sent and replies
 * taken. */
#ifndef VMBACKUP_REMOTE_H
#define VMBACKUP_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

struct vb_remote;

/* Starts `ssh [-p PORT] [USER@]HOST vmbackup serve --stdio` for url
 * (ssh://[USER@]HOST[:PORT]/PATH; a PATH that starts with /~/ is under the far
 * side's home) and greets the server. 0 with *out and the server's flags
 * (VB_HELLO_*), or an exit code after a message. */
int vb_remote_open(const char *url, struct vb_remote **out, uint32_t *flags);
/* Ends the connection: the server sees the end, drops what was not committed,
 * releases its lock and ends; ssh is waited for (killed after 10 s). */
void vb_remote_close(struct vb_remote *rm);
/* Sends b, which has no reply. 0, or -1 (the connection is then broken). */
int vb_remote_send(struct vb_remote *rm, struct vb_buf *b);
/* Sends b and takes its reply (caller frees *body). 0, or -1 with errno. */
int vb_remote_call(struct vb_remote *rm, struct vb_buf *b, unsigned char **body, size_t *len);
/* What broke the connection, for messages. */
const char *vb_remote_error(const struct vb_remote *rm);

#endif
