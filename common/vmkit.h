/* libvmkit: the code every vmkit tool shares, in layers (common/base: no libvirt;
 * common/virt: libvirt and libxml2; common/gfs: libguestfs). Tools include this
 * one header, or only the layers they link; it never includes a tool's header. */
#ifndef VMKIT_H
#define VMKIT_H

#include "vmkit-base.h"
#include "vmkit-virt.h"
#include "vmkit-gfs.h"

#endif
