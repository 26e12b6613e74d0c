/* Cleanup attributes for the base layer's owned resources, in the style of
 * libguestfs's common/utils/cleanup.h: a local declared CLEANUP_FREE char *s = NULL;
 * is freed when it goes out of scope, on every return path. The libvirt, libxml2
 * and libguestfs cleanups live with their layers (vmkit-virt.h, vmkit-gfs.h). */
#ifndef VMKIT_CLEANUP_H
#define VMKIT_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>

void vm_cleanup_free(void *ptr);
void vm_cleanup_fclose(void *ptr);
void vm_cleanup_close(void *ptr);
void vm_cleanup_strv(void *ptr);
void vm_cleanup_json(void *ptr);
void vm_cleanup_popt(void *ptr);

#define CLEANUP_FREE   __attribute__((cleanup(vm_cleanup_free)))
#define CLEANUP_FCLOSE __attribute__((cleanup(vm_cleanup_fclose)))
#define CLEANUP_CLOSE  __attribute__((cleanup(vm_cleanup_close)))
#define CLEANUP_STRV   __attribute__((cleanup(vm_cleanup_strv)))
#define CLEANUP_JSON   __attribute__((cleanup(vm_cleanup_json)))
#define CLEANUP_POPT   __attribute__((cleanup(vm_cleanup_popt)))

#endif
