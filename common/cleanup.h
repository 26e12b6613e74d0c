/* Cleanup attributes for every owned resource, in the style of libguestfs's
 * common/utils/cleanup.h: a local declared CLEANUP_FREE char *s = NULL; is freed
 * when it goes out of scope, on every return path. */
#ifndef VMKIT_CLEANUP_H
#define VMKIT_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>

void vm_cleanup_free(void *ptr);
void vm_cleanup_fclose(void *ptr);
void vm_cleanup_close(void *ptr);
void vm_cleanup_strv(void *ptr);
void vm_cleanup_virconn(void *ptr);
void vm_cleanup_virdomain(void *ptr);
void vm_cleanup_virdomain_array(void *ptr);
void vm_cleanup_xmldoc(void *ptr);
void vm_cleanup_xpathctx(void *ptr);
void vm_cleanup_xpathobj(void *ptr);
void vm_cleanup_json(void *ptr);
void vm_cleanup_guestfs(void *ptr);
void vm_cleanup_popt(void *ptr);
void vm_cleanup_xmlfree(void *ptr);

#define CLEANUP_FREE       __attribute__((cleanup(vm_cleanup_free)))
#define CLEANUP_FCLOSE     __attribute__((cleanup(vm_cleanup_fclose)))
#define CLEANUP_CLOSE      __attribute__((cleanup(vm_cleanup_close)))
#define CLEANUP_STRV       __attribute__((cleanup(vm_cleanup_strv)))
#define CLEANUP_VIRCONN    __attribute__((cleanup(vm_cleanup_virconn)))
#define CLEANUP_VIRDOMAIN  __attribute__((cleanup(vm_cleanup_virdomain)))
/* An array from virConnectListAllDomains: each element freed, then the array. */
#define CLEANUP_VIRDOMAINS __attribute__((cleanup(vm_cleanup_virdomain_array)))
#define CLEANUP_XMLDOC     __attribute__((cleanup(vm_cleanup_xmldoc)))
#define CLEANUP_XPATHCTX   __attribute__((cleanup(vm_cleanup_xpathctx)))
#define CLEANUP_XPATHOBJ   __attribute__((cleanup(vm_cleanup_xpathobj)))
#define CLEANUP_XMLFREE    __attribute__((cleanup(vm_cleanup_xmlfree)))
#define CLEANUP_JSON       __attribute__((cleanup(vm_cleanup_json)))
#define CLEANUP_GUESTFS    __attribute__((cleanup(vm_cleanup_guestfs)))
#define CLEANUP_POPT       __attribute__((cleanup(vm_cleanup_popt)))

#endif
