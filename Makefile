# vmkit: one non-recursive Makefile. `make` builds every tool, `make check` runs the
# C unit tests and the bats suites, `make install` honours PREFIX and DESTDIR.

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
VERSION := 0.1.0

CC      ?= cc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wformat=2 -Wshadow \
           -Wmissing-prototypes -Wstrict-prototypes -fno-strict-aliasing
CPPFLAGS += -D_GNU_SOURCE -DVMKIT_VERSION='"$(VERSION)"' -Icommon -Icommon/base -Icommon/virt \
            -Icommon/gfs -Icommon/stream -Icommon/snap -MMD -MP

PKG_CONFIG ?= pkg-config
# Each library and the Debian package that provides it, so that a missing one stops
# the build with a message a newcomer can act on.
# common/ is layered: base (libc, popt, json-c), virt (libvirt, libxml2) and gfs
# (libguestfs); snap (vmsnap's snapshots, on virt) is linked only by the tools that
# name it (TOOL_LIBVMKIT); a program links only the layers it needs.
BASE_PKGS := popt:libpopt-dev json-c:libjson-c-dev
VIRT_PKGS := libvirt:libvirt-dev libvirt-qemu:libvirt-dev libxml-2.0:libxml2-dev
GFS_PKGS  := libguestfs:libguestfs-dev
TOOL_PKGS := libcrypt:libcrypt-dev libcrypto:libssl-dev libzstd:libzstd-dev libnbd:libnbd-dev
PKGS := $(BASE_PKGS) $(VIRT_PKGS) $(GFS_PKGS) $(TOOL_PKGS)
CHECK_PKGS := cmocka:libcmocka-dev
# vmpatch compares package versions by each distribution's own library: libdpkg
# (a static library only: its own dependencies come from --static) and librpm.
# Checked here but kept out of PKGS, so that no other tool links them.
PATCH_PKGS := libdpkg:libdpkg-dev rpm:librpm-dev

define need_pkg
$(if $(shell $(PKG_CONFIG) --exists $(word 1,$(subst :, ,$(1))) && echo y),,\
  $(error library $(word 1,$(subst :, ,$(1))) not found: install the Debian package $(word 2,$(subst :, ,$(1)))))
endef
ifeq ($(filter clean,$(MAKECMDGOALS)),)
$(foreach p,$(PKGS) $(PATCH_PKGS),$(call need_pkg,$(p)))
endif

pkgnames = $(foreach p,$(1),$(word 1,$(subst :, ,$(p))))
LIB_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(call pkgnames,$(PKGS)) 2>/dev/null)
LIB_LIBS   := $(shell $(PKG_CONFIG) --libs $(call pkgnames,$(PKGS)) 2>/dev/null) -lpthread -lm
BASE_LIBS  := $(shell $(PKG_CONFIG) --libs $(call pkgnames,$(BASE_PKGS)) 2>/dev/null)
CPPFLAGS   += $(LIB_CFLAGS)
PATCH_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(call pkgnames,$(PATCH_PKGS)) 2>/dev/null)
PATCH_LIBS   := $(shell $(PKG_CONFIG) --libs --static libdpkg 2>/dev/null) $(shell $(PKG_CONFIG) --libs rpm 2>/dev/null)

TOOLS := vmrun vmsnap vmmigrate vmbackup p2v-convert vmbalance vmpatch
.DEFAULT_GOAL := all

LAYERS := base virt gfs stream snap
define layer_rule
$(1)_LSRCS := $$(wildcard common/$(1)/*.c)
$(1)_LOBJS := $$($(1)_LSRCS:.c=.o)
common/libvmkit-$(1).a: $$($(1)_LOBJS)
	$$(AR) rcs $$@ $$^
COMMON_SRCS += $$($(1)_LSRCS)
endef
$(foreach l,$(LAYERS),$(eval $(call layer_rule,$(l))))
COMMON_OBJS := $(COMMON_SRCS:.c=.o)
# Upper layers first, as the linker wants them.
LIBVMKIT := common/libvmkit-gfs.a common/libvmkit-virt.a common/libvmkit-stream.a common/libvmkit-base.a
LIBVMKIT_BASE := common/libvmkit-base.a

all: $(TOOLS) p2v-agent/p2v-agent vmbackup/plugin/nbdkit-vmbackup-plugin.so

# Each tool is every .c file in its folder, linked with libvmkit.a and the
# libraries only it needs: TOOL_LIBVMKIT (common layers above the others),
# TOOL_LIBS (link line) and TOOL_CFLAGS (its objects).
vmsnap_LIBVMKIT  := common/libvmkit-snap.a
vmpatch_LIBVMKIT := common/libvmkit-snap.a
vmpatch_LIBS   := $(PATCH_LIBS)
vmpatch_CFLAGS := $(PATCH_CFLAGS)
define tool_rule
$(1)_SRCS := $$(wildcard $(1)/*.c)
$(1)_OBJS := $$($(1)_SRCS:.c=.o)
$$($(1)_OBJS): CPPFLAGS += $$($(1)_CFLAGS)
$(1)/$(1): $$($(1)_OBJS) $$($(1)_LIBVMKIT) $(LIBVMKIT)
	$$(CC) $$(LDFLAGS) -o $$@ $$($(1)_OBJS) $$($(1)_LIBVMKIT) $(LIBVMKIT) $$(LIB_LIBS) $$($(1)_LIBS)
$(1): $(1)/$(1)
.PHONY: $(1)
ALL_OBJS += $$($(1)_OBJS)
endef
$(foreach t,$(TOOLS),$(eval $(call tool_rule,$(t))))

# p2v-agent is copied onto physical servers older than this machine: one static
# binary, with the base and stream layers, libblkid, libext2fs (and its com_err),
# zstd and libcrypto linked in. glibc's static getaddrinfo and getpwnam warnings
# do not concern it: it uses neither.
AGENT_PKGS := blkid:libblkid-dev ext2fs:libext2fs-dev com_err:comerr-dev
AGENT_SRCS := $(wildcard p2v-agent/*.c)
AGENT_OBJS := $(AGENT_SRCS:.c=.o)
ALL_OBJS += $(AGENT_OBJS)
$(AGENT_OBJS): CPPFLAGS += $(shell $(PKG_CONFIG) --cflags blkid ext2fs 2>/dev/null)
p2v-agent/p2v-agent: $(AGENT_OBJS) common/libvmkit-stream.a $(LIBVMKIT_BASE)
	$(foreach p,$(AGENT_PKGS),$(call need_pkg,$(p)))
	$(CC) $(LDFLAGS) -static -o $@ $(AGENT_OBJS) common/libvmkit-stream.a $(LIBVMKIT_BASE) \
	  -lblkid -lext2fs -lcom_err -lzstd -lcrypto -ljson-c -lpopt -lpthread -ldl
p2v-agent: p2v-agent/p2v-agent
.PHONY: p2v-agent

# C unit tests of pure logic: t/unit/test-*.c, each linked with the whole library;
# t/unit/base-*.c link the base layer alone, with neither libvirt nor libguestfs on
# the link line, which proves that the base layer stands without them.
UNIT_SRCS := $(wildcard t/unit/test-*.c) $(wildcard t/unit/base-*.c) $(wildcard t/unit/backup-*.c) \
             $(wildcard t/unit/stream-*.c) $(wildcard t/unit/convert-*.c) $(wildcard t/unit/balance-*.c) \
             $(wildcard t/unit/patch-*.c)
UNIT_BINS := $(UNIT_SRCS:.c=)
t/unit/test-%: t/unit/test-%.c $(LIBVMKIT)
	$(call need_pkg,$(CHECK_PKGS))
	$(CC) $(CPPFLAGS) $(CFLAGS) $(shell $(PKG_CONFIG) --cflags cmocka) -o $@ $< \
	  $(LIBVMKIT) $(LIB_LIBS) $(shell $(PKG_CONFIG) --libs cmocka)
# The event test also runs under AddressSanitizer, with its own build of events.c.
t/unit/test-events: t/unit/test-events.c common/virt/events.c $(LIBVMKIT)
	$(call need_pkg,$(CHECK_PKGS))
	$(CC) $(CPPFLAGS) $(CFLAGS) -fsanitize=address -fno-omit-frame-pointer $(shell $(PKG_CONFIG) --cflags cmocka) \
	  -o $@ $< common/virt/events.c $(LIBVMKIT) $(LIB_LIBS) $(shell $(PKG_CONFIG) --libs cmocka)
# The plan parser reads untrusted text: its test (random input too) runs under
# AddressSanitizer, with its own build of plan.c.
t/unit/base-plan: t/unit/base-plan.c common/base/plan.c $(LIBVMKIT_BASE)
	$(call need_pkg,$(CHECK_PKGS))
	$(CC) -D_GNU_SOURCE -Icommon/base $(shell $(PKG_CONFIG) --cflags $(call pkgnames,$(BASE_PKGS)) cmocka) \
	  $(CFLAGS) -fsanitize=address,undefined -fno-omit-frame-pointer -o $@ $< common/base/plan.c $(LIBVMKIT_BASE) \
	  $(BASE_LIBS) $(shell $(PKG_CONFIG) --libs cmocka)
# vmbackup's formats read untrusted bytes: t/unit/backup-X tests them (the
# repository's modules, which need no libvirt) under AddressSanitizer and UBSan,
# with the base layer, OpenSSL and zstd only.
VB_SRCS := $(addprefix vmbackup/,$(addsuffix .c,config crypto fs index json manifest proto remote rlock store))
t/unit/backup-%: t/unit/backup-%.c $(VB_SRCS) $(wildcard vmbackup/*.h) $(LIBVMKIT_BASE)
	$(call need_pkg,$(CHECK_PKGS))
	$(CC) -D_GNU_SOURCE -Icommon/base $(shell $(PKG_CONFIG) --cflags $(call pkgnames,$(BASE_PKGS)) cmocka) \
	  $(CFLAGS) -fsanitize=address,undefined -fno-omit-frame-pointer -o $@ $< $(VB_SRCS) $(LIBVMKIT_BASE) \
	  $(BASE_LIBS) -lcrypto -lzstd $(shell $(PKG_CONFIG) --libs cmocka)
# The P2V stream is read from a pipe it must not trust: t/unit/stream-X tests
# common/stream/ under AddressSanitizer and UBSan, with the base layer only.
STREAM_SRCS := $(wildcard common/stream/*.c)
t/unit/stream-%: t/unit/stream-%.c $(STREAM_SRCS) common/stream/vmkit-stream.h $(LIBVMKIT_BASE)
	$(call need_pkg,$(CHECK_PKGS))
	$(CC) -D_GNU_SOURCE -Icommon/base -Icommon/stream $(shell $(PKG_CONFIG) --cflags $(call pkgnames,$(BASE_PKGS)) cmocka) \
	  $(CFLAGS) -fsanitize=address,undefined -fno-omit-frame-pointer -o $@ $< $(STREAM_SRCS) $(LIBVMKIT_BASE) \
	  $(BASE_LIBS) -lcrypto -lzstd $(shell $(PKG_CONFIG) --libs cmocka)
# p2v-convert's adaptation of a guest: t/unit/convert-X links p2v-convert/adapt.c
# with t/unit/fake-guestfs.c, an in-memory guest, instead of libguestfs (whose
# headers only it uses, with libvirt's), under AddressSanitizer and UBSan.
CONVERT_FAKE := t/unit/fake-guestfs.c
t/unit/convert-%: t/unit/convert-%.c p2v-convert/adapt.c $(CONVERT_FAKE) t/unit/fake-guestfs.h \
                  $(wildcard p2v-convert/*.h common/*/*.h) $(LIBVMKIT_BASE)
	$(call need_pkg,$(CHECK_PKGS))
	$(CC) -D_GNU_SOURCE -Ip2v-convert -Icommon/base -Icommon/virt -Icommon/gfs -Icommon/stream -It/unit \
	  $(LIB_CFLAGS) $(shell $(PKG_CONFIG) --cflags cmocka) $(CFLAGS) -fsanitize=address,undefined \
	  -fno-omit-frame-pointer -o $@ $< p2v-convert/adapt.c $(CONVERT_FAKE) $(LIBVMKIT_BASE) $(BASE_LIBS) \
	  $(shell $(PKG_CONFIG) --libs cmocka)
# vmbalance's pure logic (the config file, the planner), libc only: t/unit/balance-X
# tests it under AddressSanitizer and UBSan; bench/balance-plan times the planner.
BAL_SRCS := $(addprefix vmbalance/,$(addsuffix .c,config plan sim strmap))
BAL_HDRS := $(addprefix vmbalance/,$(addsuffix .h,config plan sim strmap))
t/unit/balance-%: t/unit/balance-%.c $(BAL_SRCS) $(BAL_HDRS)
	$(call need_pkg,$(CHECK_PKGS))
	$(CC) -D_GNU_SOURCE $(shell $(PKG_CONFIG) --cflags cmocka) $(CFLAGS) -fsanitize=address,undefined \
	  -fno-omit-frame-pointer -o $@ $< $(BAL_SRCS) -lm $(shell $(PKG_CONFIG) --libs cmocka)
bench/balance-plan: bench/balance-plan.c $(BAL_SRCS) $(BAL_HDRS)
	$(CC) -D_GNU_SOURCE $(CFLAGS) -o $@ $< $(BAL_SRCS) -lm
# vmpatch's feed and inventory readers take untrusted JSON: t/unit/patch-X tests
# its modules but main.c (the base layer, libdpkg and librpm only) under
# AddressSanitizer and UBSan.
PATCH_SRCS := $(addprefix vmpatch/,$(addsuffix .c,feed inventory pkgdb scan vercmp))
PATCH_HDRS := vmpatch/vmpatch.h vmpatch/vercmp.h
t/unit/patch-%: t/unit/patch-%.c $(PATCH_SRCS) $(PATCH_HDRS) $(LIBVMKIT_BASE)
	$(call need_pkg,$(CHECK_PKGS))
	$(CC) -D_GNU_SOURCE -Icommon/base -Ivmpatch $(shell $(PKG_CONFIG) --cflags $(call pkgnames,$(BASE_PKGS)) cmocka) \
	  $(PATCH_CFLAGS) $(CFLAGS) -fsanitize=address,undefined -fno-omit-frame-pointer -o $@ $< $(PATCH_SRCS) \
	  $(LIBVMKIT_BASE) $(BASE_LIBS) $(PATCH_LIBS) $(shell $(PKG_CONFIG) --libs cmocka)
t/unit/base-%: t/unit/base-%.c $(LIBVMKIT_BASE)
	$(call need_pkg,$(CHECK_PKGS))
	$(CC) -D_GNU_SOURCE -Icommon/base $(shell $(PKG_CONFIG) --cflags $(call pkgnames,$(BASE_PKGS)) cmocka) \
	  $(CFLAGS) -o $@ $< $(LIBVMKIT_BASE) $(BASE_LIBS) $(shell $(PKG_CONFIG) --libs cmocka)

# Fuzz targets, one per parser of untrusted bytes in vmbackup (t/fuzz/fuzz-X.c:
# config, index, manifest, record, json), built like t/unit/backup-X with
# $(VB_SRCS) and the base layer, every UBSan finding fatal. With gcc they link
# t/fuzz/driver.c, a small engine (coverage from -fsanitize-coverage=trace-pc);
# `make check` builds them and t/run runs each for 20000 runs (VMKIT_FUZZ_RUNS)
# from a fixed seed, a crash's input kept in t/.run/fuzz/. By hand:
#   t/fuzz/fuzz-manifest -seconds=3600 -seed=7    fuzz longer, from another seed
#   t/fuzz/fuzz-manifest t/.run/fuzz/crash-HASH   reproduce a crash (gdb --args too)
#   t/fuzz/fuzz-manifest -gen-seeds DIR           write its seeds (the encoders' output)
# A crash found by hand is kept in $FUZZ_ARTIFACT_DIR, else the current folder.
# With clang's libFuzzer instead: make -B FUZZ_ENGINE=libfuzzer t/fuzz/fuzz-manifest,
# then t/fuzz/fuzz-manifest DIR (seeds from a gcc build's -gen-seeds; it adds what
# it finds there); the same crash file reproduces under either.
FUZZ_ENGINE ?= driver
FUZZ_BINS := $(basename $(wildcard t/fuzz/fuzz-*.c))
FUZZ_CFLAGS = -D_GNU_SOURCE -Icommon/base -Icommon/stream $(shell $(PKG_CONFIG) --cflags $(call pkgnames,$(BASE_PKGS))) $(CFLAGS) \
  -fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_LIBS = $(LIBVMKIT_BASE) $(BASE_LIBS) -lcrypto -lzstd
ifeq ($(FUZZ_ENGINE),libfuzzer)
t/fuzz/fuzz-%: t/fuzz/fuzz-%.c t/fuzz/fuzz.h $(VB_SRCS) $(STREAM_SRCS) $(wildcard vmbackup/*.h) $(LIBVMKIT_BASE)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(VB_SRCS) $(STREAM_SRCS) $(FUZZ_LIBS)
else
t/fuzz/fuzz-%: t/fuzz/fuzz-%.c t/fuzz/fuzz.h t/fuzz/driver.o $(VB_SRCS) $(STREAM_SRCS) $(wildcard vmbackup/*.h) $(LIBVMKIT_BASE)
	$(CC) $(FUZZ_CFLAGS) -DFUZZ_DRIVER -fsanitize=address,undefined -fsanitize-coverage=trace-pc -o $@ $< \
	  $(VB_SRCS) $(STREAM_SRCS) t/fuzz/driver.o $(FUZZ_LIBS)
endif
# vmbalance's config file: its own sources, libc only.
ifeq ($(FUZZ_ENGINE),libfuzzer)
t/fuzz/fuzz-balance-config: t/fuzz/fuzz-balance-config.c t/fuzz/fuzz.h $(BAL_SRCS) $(BAL_HDRS)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(BAL_SRCS) -lm
else
t/fuzz/fuzz-balance-config: t/fuzz/fuzz-balance-config.c t/fuzz/fuzz.h t/fuzz/driver.o $(BAL_SRCS) $(BAL_HDRS)
	$(CC) $(FUZZ_CFLAGS) -DFUZZ_DRIVER -fsanitize=address,undefined -fsanitize-coverage=trace-pc -o $@ $< \
	  $(BAL_SRCS) t/fuzz/driver.o -lm
endif
# vmpatch's OSV record parser: its own sources, the base layer, libdpkg, librpm.
ifeq ($(FUZZ_ENGINE),libfuzzer)
t/fuzz/fuzz-osv: t/fuzz/fuzz-osv.c t/fuzz/fuzz.h $(PATCH_SRCS) $(PATCH_HDRS) $(LIBVMKIT_BASE)
	clang $(FUZZ_CFLAGS) -Ivmpatch $(PATCH_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(PATCH_SRCS) \
	  $(LIBVMKIT_BASE) $(BASE_LIBS) $(PATCH_LIBS)
else
t/fuzz/fuzz-osv: t/fuzz/fuzz-osv.c t/fuzz/fuzz.h t/fuzz/driver.o $(PATCH_SRCS) $(PATCH_HDRS) $(LIBVMKIT_BASE)
	$(CC) $(FUZZ_CFLAGS) -Ivmpatch $(PATCH_CFLAGS) -DFUZZ_DRIVER -fsanitize=address,undefined -fsanitize-coverage=trace-pc \
	  -o $@ $< $(PATCH_SRCS) t/fuzz/driver.o $(LIBVMKIT_BASE) $(BASE_LIBS) $(PATCH_LIBS)
endif
# The engine itself is not instrumented for coverage: only the code under test.
t/fuzz/driver.o: t/fuzz/driver.c t/fuzz/fuzz.h
	$(CC) $(FUZZ_CFLAGS) -DFUZZ_DRIVER -fsanitize=address,undefined -c -o $@ $<

# vmbackup's nbdkit plugin (nbdkit's plugin API, nbdkit-plugin-dev): the
# repository modules and the base layer built into it position-independent.
VB_PLUGIN_SRCS := vmbackup/plugin/nbdkit-vmbackup-plugin.c $(VB_SRCS) $(wildcard common/base/*.c)
vmbackup/plugin/nbdkit-vmbackup-plugin.so: $(VB_PLUGIN_SRCS) $(wildcard vmbackup/*.h common/base/*.h)
	$(call need_pkg,nbdkit:nbdkit-plugin-dev)
	$(CC) -D_GNU_SOURCE -DVMKIT_VERSION='"$(VERSION)"' -Ivmbackup -Icommon/base \
	  $(shell $(PKG_CONFIG) --cflags nbdkit $(call pkgnames,$(BASE_PKGS))) $(CFLAGS) -fPIC -shared \
	  -fvisibility=hidden -o $@ $(VB_PLUGIN_SRCS) $(BASE_LIBS) -lcrypto -lzstd -lpthread

# A fault injector the tests preload into a tool (t/fault/inject.c).
t/fault/libinject.so: t/fault/inject.c
	$(CC) $(CFLAGS) -shared -fPIC $(shell $(PKG_CONFIG) --cflags libvirt) -o $@ $< -ldl

check: all $(UNIT_BINS) $(FUZZ_BINS) t/fault/libinject.so bench/balance-plan
	t/run

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7
	install -m 755 $(foreach t,$(TOOLS) p2v-agent,$(t)/$(t)) $(DESTDIR)$(BINDIR)/
	install -d $(DESTDIR)$(PREFIX)/lib/vmkit
	install -m 755 vmbackup/plugin/nbdkit-vmbackup-plugin.so $(DESTDIR)$(PREFIX)/lib/vmkit/
	install -m 644 $(wildcard man/*.1) $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(wildcard man/*.5) $(DESTDIR)$(MANDIR)/man5/
	install -m 644 $(wildcard man/*.7) $(DESTDIR)$(MANDIR)/man7/

clean:
	rm -f common/*/*.o common/*/*.d common/*.a $(foreach t,$(TOOLS) p2v-agent,$(t)/*.o $(t)/*.d $(t)/$(t)) \
	  $(UNIT_BINS) t/unit/*.d t/fault/libinject.so $(FUZZ_BINS) t/fuzz/*.o bench/balance-plan

.PHONY: all check install clean
-include $(COMMON_SRCS:.c=.d) $(ALL_OBJS:.o=.d)
