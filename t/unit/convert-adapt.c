/* Unit tests of p2v-convert's adaptation of a Linux guest (p2v-convert/adapt.c,
 * through its entry point pc_inspect_adapt) on a fake libguestfs
 * (t/unit/fake-guestfs.c): the server's /dev/sdX names mapped onto the stream's
 * disks by the agent's names or by order, and never onto the wrong file system;
 * fstab, RESUME= and root= by UUID; GRUB's defaults given a serial console, in a
 * form the guest's own sh still reads (sh -n really runs); the NIC names read from
 * netplan and ifupdown, each pinned to its MAC; a kernel without virtio_blk. Each
 * case asserts the files' exact text, the warnings, and the report's "adapted"
 * and "changes". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "convert.h"
#include "fake-guestfs.h"

#define ROOT_UUID "6b1f0c9e-2d41-4c8a-9f0e-5a3b7c2d1e01"
#define SWAP_UUID "0c8d2e4f-9a17-4b3c-8e6d-1f2a3b4c5d02"
#define DATA_UUID "9e7a5c3b-1d2f-4e60-a8b9-c0d1e2f3a403"
#define KVER "6.1.0-18-amd64"
#define MAC "52:54:00:12:34:56"

/* The mkserver server's fstab (scripts/mkserver). */
static const char server_fstab[] =
  "# /etc/fstab: static file system information (as the installer of a server wrote it).\n"
  "# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>\n"
  "/dev/sda1\t/\text4\terrors=remount-ro\t0\t1\n"
  "/dev/sda2\tnone\tswap\tsw\t0\t0\n"
  "/dev/sdb1\t/srv/data\text4\tdefaults\t0\t2\n";

/* Its /etc/default/grub: Debian's, with mkserver's tail (a serial console
 * commented out, a trailing comment and blanks after the command line). */
#define SERVER_GRUB \
  "# If you change this file, run 'update-grub' afterwards to update\n" \
  "# /boot/grub/grub.cfg.\n" \
  "\n" \
  "GRUB_DEFAULT=0\n" \
  "GRUB_TIMEOUT=5\n" \
  "GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n" \
  "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n" \
  "\n" \
  "# Uncomment to disable graphical terminal (grub-pc only)\n" \
  "#GRUB_TERMINAL=console\n" \
  "# The serial console, off on this server:\n" \
  "#GRUB_CMDLINE_LINUX=\"console=ttyS0,115200n8\"\n" \
  "GRUB_CMDLINE_LINUX=\"net.ifnames=1\"   # set by the installer  \n" \
  "GRUB_DISABLE_LINUX_UUID=true\n"

#define ADDED_HEAD "\n# Added by p2v-convert: root by UUID, the console of the kernel and of GRUB on the serial port too\n"
#define ADD_UUID "GRUB_DISABLE_LINUX_UUID=false\n"
#define ADD_CMDLINE "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX console=tty0 console=ttyS0,115200\"\n"
#define ADD_TERMINAL "GRUB_TERMINAL=\"console serial\"\n"
#define ADD_SERIAL "GRUB_SERIAL_COMMAND=\"serial --speed=115200 --unit=0\"\n"

/* What one run of pc_inspect_adapt gave. */
struct run {
  int rc;
  json_object *report;
  bool adapted;
  char *changes;  /* the report's "changes", one a line */
  char *warnings; /* the warnings printed, one a line, without "tool: warning: " */
};

static struct run R;

static void run_free(void)
{
  json_object_put(R.report);
  free(R.changes);
  free(R.warnings);
  memset(&R, 0, sizeof R);
}

/* A Debian 12 guest with one kernel (virtio_blk a module), initramfs-tools, GRUB
 * and systemd, on disks that the test adds. */
static void debian(void)
{
  fg_reset();
  fg_file("/boot/vmlinuz-" KVER, "kernel");
  fg_file("/lib/modules/" KVER "/kernel/drivers/block/virtio_blk.ko", "module");
  fg_file("/lib/modules/" KVER "/modules.builtin", "kernel/drivers/block/loop.ko\n");
  fg_file("/usr/sbin/update-initramfs", "#!/bin/sh\n");
  fg_file("/etc/initramfs-tools/modules", "ahci\nata_piix\nsd_mod\next4\n");
  fg_file("/usr/sbin/update-grub", "#!/bin/sh\n");
  fg_file("/lib/systemd/systemd-udevd", "binary");
}

/* The server's disks in the appliance: sda (sda1 root, sda2 swap) and sdb (sdb1
 * data), the stream's first disk first; with swapped, the data disk first. */
static void server_disks(bool swapped)
{
  const char *os = swapped ? "/dev/sdb" : "/dev/sda", *data = swapped ? "/dev/sda" : "/dev/sdb";
  char p[32];
  fg_disk("/dev/sda");
  fg_disk("/dev/sdb");
  snprintf(p, sizeof p, "%s1", os);
  fg_fs(p, "ext4", ROOT_UUID);
  fg_root(p);
  fg_mountpoint("/", p);
  snprintf(p, sizeof p, "%s2", os);
  fg_fs(p, "swap", SWAP_UUID);
  snprintf(p, sizeof p, "%s1", data);
  fg_fs(p, "ext4", DATA_UUID);
  fg_mountpoint("/srv/data", p);
}

/* The warnings among what the tool printed, one a line, without their prefix. */
static char *warnings_of(const char *printed)
{
  char *out = vm_strdup("");
  for (const char *l = printed; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
    size_t ll = strcspn(l, "\n");
    const char *w = strstr(l, ": warning: ");
    if (!w || w >= l + ll) continue;
    w += 11;
    char *o = vm_strdup_printf("%s%.*s\n", out, (int)(l + ll - w), w);
    free(out);
    out = o;
  }
  return out;
}

/* pc_inspect_adapt on the fake guest, its stream's disks named names (as the
 * agent saw them), with the inventory's text (NULL: none). What it printed is
 * kept (and shown as TAP comments). */
static void adapt(const char *const *names, size_t n, const char *inventory)
{
  run_free();
  struct pc_disk disks[8];
  for (size_t i = 0; i < n; i++) disks[i] = (struct pc_disk){ .server_name = names[i], .local = "x", .path = "x" };
  json_object *inv = json_tokener_parse(inventory ? inventory : "{}");
  assert_non_null(inv);
  R.report = json_object_new_object();
  char *printed = NULL;
  size_t plen = 0;
  FILE *mem = open_memstream(&printed, &plen);
  assert_non_null(mem);
  FILE *real = stderr;
  stderr = mem;
  vm_opts.quiet = 1;
  R.rc = pc_inspect_adapt(fg_handle(), disks, n, inv, R.report);
  stderr = real;
  fclose(mem);
  for (const char *l = printed; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    fprintf(stderr, "# %.*s\n", (int)strcspn(l, "\n"), l);
  R.warnings = warnings_of(printed);
  free(printed);
  json_object_put(inv);
  json_object *j;
  assert_true(json_object_object_get_ex(R.report, "adapted", &j));
  R.adapted = json_object_get_boolean(j);
  assert_true(json_object_object_get_ex(R.report, "changes", &j));
  R.changes = vm_strdup("");
  for (size_t i = 0; i < json_object_array_length(j); i++) {
    char *c = vm_strdup_printf("%s%s\n", R.changes, json_object_get_string(json_object_array_get_idx(j, i)));
    free(R.changes);
    R.changes = c;
  }
  /* A guest that is not adapted whole is a warning and exit 6, nothing else. */
  assert_int_equal(R.rc, R.adapted ? 0 : VM_EXIT_VERIFY);
}

static bool has_line(const char *text, const char *line)
{
  size_t l = strlen(line);
  for (const char *p = text; p && (p = strstr(p, line)); p++)
    if ((p == text || p[-1] == '\n') && p[l] == '\n') return true;
  return false;
}

/* ---- the disks' names ---------------------------------------------------------------- */

/* The mkserver server read by the agent on a rescue system, which named its disks
 * sdb and sdc: the fstab fits the disks' order only, and every /dev name of it,
 * RESUME= and GRUB's defaults are adapted. */
static void rescue_names_by_order(void **state)
{
  debian();
  server_disks(false);
  fg_file("/etc/fstab", server_fstab);
  fg_file("/etc/initramfs-tools/conf.d/resume", "RESUME=\"/dev/sda2\"\n");
  fg_file("/etc/default/grub", SERVER_GRUB);
  fg_file("/etc/network/interfaces", "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
                                     "# The server's on-board NIC.\nallow-hotplug enp3s0\niface enp3s0 inet static\n"
                                     "\taddress 192.0.2.10/24\n\tgateway 192.0.2.1\n");
  const char *names[] = { "sdb", "sdc" };
  adapt(names, 2, "{\"nics\":[{\"name\":\"eth0\",\"mac\":\"" MAC "\"}]}");
  assert_string_equal(fg_text("/etc/fstab"),
                      "# /etc/fstab: static file system information (as the installer of a server wrote it).\n"
                      "# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>\n"
                      "UUID=" ROOT_UUID "\t/\text4\terrors=remount-ro\t0\t1\n"
                      "UUID=" SWAP_UUID "\tnone\tswap\tsw\t0\t0\n"
                      "UUID=" DATA_UUID "\t/srv/data\text4\tdefaults\t0\t2\n");
  assert_string_equal(fg_text("/etc/initramfs-tools/conf.d/resume"), "RESUME=\"UUID=" SWAP_UUID "\"\n");
  /* The commented console is not counted; the command line's line stays byte for
   * byte, and what is added comes after everything that sets it. */
  assert_string_equal(fg_text("/etc/default/grub"), SERVER_GRUB ADDED_HEAD ADD_UUID ADD_CMDLINE ADD_TERMINAL ADD_SERIAL);
  assert_string_equal(fg_text("/etc/initramfs-tools/modules"),
                      "ahci\nata_piix\nsd_mod\next4\nvirtio_pci\nvirtio_blk\nvirtio_scsi\nvirtio_net\nvirtio_console\n");
  assert_string_equal(fg_text("/etc/systemd/network/10-p2v-enp3s0.link"),
                      "# p2v-convert: the server's NIC enp3s0 keeps its name on the VM (same MAC).\n"
                      "[Match]\nMACAddress=" MAC "\n\n[Link]\nName=enp3s0\n");
  assert_string_equal(fg_commands(), "update-initramfs -u -k all\nsh -n /etc/default/grub\nupdate-grub\n");
  assert_string_equal(R.warnings, "");
  assert_string_equal(
    R.changes,
    "/etc/fstab: /dev/sda1 (/) by UUID=" ROOT_UUID "\n"
    "/etc/fstab: /dev/sda2 (none) by UUID=" SWAP_UUID "\n"
    "/etc/fstab: /dev/sdb1 (/srv/data) by UUID=" DATA_UUID "\n"
    "/etc/initramfs-tools/conf.d/resume: RESUME=/dev/sda2 by UUID=" SWAP_UUID "\n"
    "/etc/systemd/network/10-p2v-enp3s0.link: NIC enp3s0 pinned to " MAC
    " (the only NIC of the server and of the guest's configuration)\n"
    "/etc/initramfs-tools/modules: 'virtio_pci', 'virtio_blk', 'virtio_scsi', 'virtio_net' and 'virtio_console' added\n"
    "update-initramfs -u -k all: the initramfs of 1 kernel made again with the virtio drivers\n"
    "/etc/default/grub: GRUB_DISABLE_LINUX_UUID=false added\n"
    "/etc/default/grub: GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX console=tty0 console=ttyS0,115200\" added\n"
    "/etc/default/grub: GRUB_TERMINAL=\"console serial\" added\n"
    "/etc/default/grub: GRUB_SERIAL_COMMAND=\"serial --speed=115200 --unit=0\" added\n"
    "update-grub: /boot/grub/grub.cfg written again\n");
  assert_true(R.adapted);
  json_object *roles;
  assert_true(json_object_object_get_ex(R.report, "roles", &roles));
  assert_string_equal(json_object_to_json_string_ext(roles, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
                      "[{\"disk\":\"sdb\",\"role\":\"os\",\"mounts\":[\"/\"]},"
                      "{\"disk\":\"sdc\",\"role\":\"data\",\"mounts\":[\"/srv/data\"]}]");
}

/* The server's disks probed the other way round (the stream's first disk is the
 * server's sdb, which the agent called sda): /dev/sdb1 maps onto the root both by
 * name and by order. The data line must never get the root's UUID: it is left as
 * it is, a failed step. */
static void other_order_never_the_root(void **state)
{
  debian();
  server_disks(true);
  const char *fstab = "UUID=" ROOT_UUID " / ext4 errors=remount-ro 0 1\n"
                      "/dev/sdb1 /srv/data ext4 defaults 0 2\n";
  fg_file("/etc/fstab", fstab);
  const char *names[] = { "sda", "sdb" };
  adapt(names, 2, NULL);
  assert_string_equal(fg_text("/etc/fstab"), fstab);
  assert_string_equal(R.warnings,
                      "guest: its fstab fits neither the names the agent saw the disks by nor their order: its /dev "
                      "names are left as they are\n"
                      "guest: /etc/fstab (/srv/data) names /dev/sdb1: no disk of the stream holds a ext4 file system "
                      "there: left as it is\n");
  assert_false(R.adapted);
  assert_null(strstr(R.changes, "/etc/fstab"));
}

/* The agent ran on the server itself: its names and the disks' order agree. */
static void server_names_agree(void **state)
{
  debian();
  server_disks(false);
  fg_file("/etc/fstab", server_fstab);
  fg_file("/etc/initramfs-tools/conf.d/resume", "RESUME=/dev/sda2\n");
  const char *names[] = { "sda", "sdb" };
  adapt(names, 2, NULL);
  assert_string_equal(fg_text("/etc/fstab"),
                      "# /etc/fstab: static file system information (as the installer of a server wrote it).\n"
                      "# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>\n"
                      "UUID=" ROOT_UUID "\t/\text4\terrors=remount-ro\t0\t1\n"
                      "UUID=" SWAP_UUID "\tnone\tswap\tsw\t0\t0\n"
                      "UUID=" DATA_UUID "\t/srv/data\text4\tdefaults\t0\t2\n");
  assert_string_equal(fg_text("/etc/initramfs-tools/conf.d/resume"), "RESUME=UUID=" SWAP_UUID "\n");
  assert_string_equal(R.warnings, "");
  assert_true(R.adapted);
}

/* A nofail line for a disk the stream does not hold (a USB backup disk): left as
 * it is, said, not a failure. */
static void nofail_disk_not_in_stream(void **state)
{
  debian();
  server_disks(false);
  const char *fstab = "/dev/sda1 / ext4 errors=remount-ro 0 1\n"
                      "/dev/sdc1 /backup ext4 defaults,nofail 0 2\n";
  fg_file("/etc/fstab", fstab);
  const char *names[] = { "sda", "sdb" };
  adapt(names, 2, NULL);
  assert_string_equal(fg_text("/etc/fstab"), "UUID=" ROOT_UUID " / ext4 errors=remount-ro 0 1\n"
                                             "/dev/sdc1 /backup ext4 defaults,nofail 0 2\n");
  assert_string_equal(R.warnings, "guest: /etc/fstab (/backup) names /dev/sdc1: no disk of the stream holds a ext4 "
                                  "file system there: left as it is\n");
  assert_true(R.adapted);
}

/* ---- GRUB ---------------------------------------------------------------------------- */

/* A guest whose root is by UUID already and whose GRUB defaults are text. */
static void grub_guest(const char *grub)
{
  debian();
  server_disks(false);
  fg_file("/etc/fstab", "UUID=" ROOT_UUID " / ext4 errors=remount-ro 0 1\n");
  fg_file("/etc/default/grub", grub);
}

static const char *const sda_sdb[] = { "sda", "sdb" };

/* The server's console on COM2 (IPMI serial over LAN): the VM's is COM1, and the
 * kernel's and GRUB's are added there still. */
static void ipmi_sol_console_ttyS1(void **state)
{
  const char *grub = "GRUB_DEFAULT=0\n"
                     "GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS1,115200n8\"\n"
                     "GRUB_TERMINAL=\"serial console\"\n"
                     "GRUB_SERIAL_COMMAND=\"serial --speed=115200 --unit=1 --word=8 --parity=no --stop=1\"\n";
  grub_guest(grub);
  adapt(sda_sdb, 2, NULL);
  CLEANUP_FREE char *want = vm_strdup_printf("%s%s%s%s", grub, ADDED_HEAD, ADD_CMDLINE, ADD_SERIAL);
  assert_string_equal(fg_text("/etc/default/grub"), want);
  assert_string_equal(R.warnings, "");
  assert_true(R.adapted);
}

/* GRUB_DISABLE_LINUX_UUID=true inside an if block, and a last line ending in a
 * backslash: what is added follows an empty line, and the guest's sh still reads
 * the file (sh -n ran on it). */
static void uuid_off_in_if_and_backslash(void **state)
{
  const char *grub = "GRUB_DEFAULT=0\n"
                     "if [ -e /etc/pve ]; then\n"
                     "  GRUB_DISABLE_LINUX_UUID=true\n"
                     "fi\n"
                     "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n"
                     "GRUB_TIMEOUT=5 \\";
  grub_guest(grub);
  adapt(sda_sdb, 2, NULL);
  CLEANUP_FREE char *want =
    vm_strdup_printf("%s\n%s%s%s%s%s", grub, ADDED_HEAD, ADD_UUID, ADD_CMDLINE, ADD_TERMINAL, ADD_SERIAL);
  assert_string_equal(fg_text("/etc/default/grub"), want);
  assert_non_null(strstr(fg_commands(), "sh -n /etc/default/grub\n"));
  assert_string_equal(R.warnings, "");
  assert_true(R.adapted);
  /* And with the backslash's newline there. */
  CLEANUP_FREE char *nl = vm_strdup_printf("%s\n", grub);
  grub_guest(nl);
  adapt(sda_sdb, 2, NULL);
  CLEANUP_FREE char *want2 = vm_strdup_printf("%s%s%s%s%s%s", nl, ADDED_HEAD, ADD_UUID, ADD_CMDLINE, ADD_TERMINAL,
                                              ADD_SERIAL);
  assert_string_equal(fg_text("/etc/default/grub"), want2);
  assert_string_equal(R.warnings, "");
  assert_true(R.adapted);
}

/* The fake's sh -n is a real check: a defaults file the shell cannot read is put
 * back as it was, a failed step, and update-grub is not run. */
static void unreadable_grub_put_back(void **state)
{
  const char *grub = "GRUB_DEFAULT=0\nif true; then\nGRUB_TIMEOUT=5\n";
  grub_guest(grub);
  adapt(sda_sdb, 2, NULL);
  assert_string_equal(fg_text("/etc/default/grub"), grub);
  assert_null(strstr(fg_commands(), "update-grub"));
  assert_non_null(strstr(R.warnings, "guest: checking /etc/default/grub after the change (sh -n); it is put back as "
                                     "it was failed: command: sh -n /etc/default/grub: "));
  assert_false(R.adapted);
}

/* A command line over two lines, root= on the second: by UUID, the rest kept. */
static void cmdline_over_two_lines(void **state)
{
  const char *grub = "GRUB_DEFAULT=0\n"
                     "GRUB_CMDLINE_LINUX=\"quiet\n"
                     "  root=/dev/sda1 ro\"\n";
  grub_guest(grub);
  adapt(sda_sdb, 2, NULL);
  assert_string_equal(fg_text("/etc/default/grub"), "GRUB_DEFAULT=0\n"
                                                    "GRUB_CMDLINE_LINUX=\"quiet\n"
                                                    "  root=UUID=" ROOT_UUID " ro\"\n" ADDED_HEAD ADD_CMDLINE
                                                    ADD_TERMINAL ADD_SERIAL);
  assert_true(has_line(R.changes, "/etc/default/grub: GRUB_CMDLINE_LINUX \"quiet\n  root=UUID=" ROOT_UUID
                                  " ro\" (was \"quiet\n  root=/dev/sda1 ro\")"));
  assert_string_equal(R.warnings, "");
  assert_true(R.adapted);
}

/* With files in /etc/default/grub.d (sourced after the defaults), what is added
 * goes in one of them sourced last; /etc/default/grub stays as it is. */
static void dropins_get_the_additions(void **state)
{
  const char *grub = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n";
  grub_guest(grub);
  fg_file("/etc/default/grub.d/init-select.cfg", "if [ -f /etc/default/grub.d/x ]; then :; fi\n");
  adapt(sda_sdb, 2, NULL);
  assert_string_equal(fg_text("/etc/default/grub"), grub);
  assert_string_equal(fg_text("/etc/default/grub.d/zz-p2v-convert.cfg"),
                      ADDED_HEAD ADD_CMDLINE ADD_TERMINAL ADD_SERIAL);
  assert_string_equal(fg_commands(), "update-initramfs -u -k all\nsh -n /etc/default/grub.d/zz-p2v-convert.cfg\n"
                                     "update-grub\n");
  assert_true(has_line(R.changes, "/etc/default/grub.d/zz-p2v-convert.cfg: GRUB_TERMINAL=\"console serial\" added"));
  assert_string_equal(R.warnings, "");
  assert_true(R.adapted);
}

/* ---- NIC names ---------------------------------------------------------------------- */

#define LINK(name, mac)                                                                                          \
  "# p2v-convert: the server's NIC " name " keeps its name on the VM (same MAC).\n[Match]\nMACAddress=" mac   \
  "\n\n[Link]\nName=" name "\n"

/* The inventory of a rescue system: one NIC, named otherwise (eth0). The guest's
 * configuration names one NIC (want): pinned to that MAC. Were any other name
 * read (an ID, a bridge), two names would be left and none pinned. */
static void one_nic(const char *path, const char *text, const char *want)
{
  debian();
  server_disks(false);
  fg_file("/etc/fstab", "UUID=" ROOT_UUID " / ext4 errors=remount-ro 0 1\n");
  fg_file(path, text);
  adapt(sda_sdb, 2, "{\"nics\":[{\"name\":\"eth0\",\"mac\":\"" MAC "\"}]}");
  CLEANUP_FREE char *link = vm_strdup_printf("/etc/systemd/network/10-p2v-%s.link", want);
  CLEANUP_FREE char *want_text = vm_strdup_printf(LINK("%s", MAC), want, want);
  assert_string_equal(R.warnings, "");
  assert_non_null(fg_text(link));
  assert_string_equal(fg_text(link), want_text);
  CLEANUP_FREE char *change = vm_strdup_printf(
    "%s: NIC %s pinned to " MAC " (the only NIC of the server and of the guest's configuration)", link, want);
  assert_true(has_line(R.changes, change));
  assert_true(R.adapted);
}

static void netplan_name_key(void **state)
{
  one_nic("/etc/netplan/01-netcfg.yaml",
          "# This file describes the network interfaces available on your system\n"
          "network:\n"
          "  version: 2\n"
          "  renderer: networkd\n"
          "  ethernets:\n"
          "    enp3s0:\n"
          "      dhcp4: true\n"
          "  bridges: {}\n",
          "enp3s0");
}

/* An ID with match: is not a name (netplan finds that NIC itself); set-name: is. */
static void netplan_match_id_and_set_name(void **state)
{
  one_nic("/etc/netplan/50-cloud-init.yaml",
          "network:\n"
          "  version: 2\n"
          "  ethernets:\n"
          "    lan:\n"
          "      match:\n"
          "        macaddress: \"" MAC "\"\n"
          "      set-name: enp3s0\n"
          "      addresses: [192.0.2.10/24]\n",
          "enp3s0");
}

/* A netplan file another system wrote, with CR LF line ends. */
static void netplan_crlf(void **state)
{
  one_nic("/etc/netplan/01-netcfg.yaml",
          "network:\r\n"
          "  version: 2\r\n"
          "\r\n"
          "  ethernets:\r\n"
          "    enp3s0:\r\n"
          "      dhcp4: true\r\n",
          "enp3s0");
}

/* Flow style: "ID: {match: ..., set-name: NAME}" names NAME only. */
static void netplan_flow_style(void **state)
{
  one_nic("/etc/netplan/01-netcfg.yaml",
          "network:\n"
          "  version: 2\n"
          "  ethernets:\n"
          "    lan: {match: {macaddress: \"" MAC "\"}, set-name: enp3s0, dhcp4: true}\n",
          "enp3s0");
  one_nic("/etc/netplan/01-netcfg.yaml",
          "network:\n"
          "  version: 2\n"
          "  ethernets:\n"
          "    enp3s0: {dhcp4: true}\n",
          "enp3s0");
}

/* ifupdown with a bridge: br0 is no NIC's name, its port enp3s0 is. */
static void ifupdown_bridge_port(void **state)
{
  one_nic("/etc/network/interfaces",
          "source /etc/network/interfaces.d/*\n"
          "\n"
          "auto lo\n"
          "iface lo inet loopback\n"
          "\n"
          "iface enp3s0 inet manual\n"
          "\n"
          "auto br0\n"
          "iface br0 inet static\n"
          "\taddress 192.0.2.10/24\n"
          "\tgateway 192.0.2.1\n"
          "\tbridge_ports enp3s0\n"
          "\tbridge_stp off\n",
          "enp3s0");
}

/* ---- the kernel -------------------------------------------------------------------- */

/* A kernel with no virtio_blk (no module, not built in) cannot find its disks on
 * the VM: the guest is not adapted. */
static void kernel_without_virtio_blk(void **state)
{
  debian();
  server_disks(false);
  fg_file("/etc/fstab", "UUID=" ROOT_UUID " / ext4 errors=remount-ro 0 1\n");
  guestfs_rm(fg_handle(), "/lib/modules/" KVER "/kernel/drivers/block/virtio_blk.ko");
  adapt(sda_sdb, 2, NULL);
  assert_string_equal(R.warnings,
                      "guest: kernel " KVER " has no virtio_blk driver: it will not find its disks on the VM\n");
  assert_false(R.adapted);
  /* Built in, it is there. */
  fg_file("/lib/modules/" KVER "/modules.builtin", "kernel/drivers/block/loop.ko\nkernel/drivers/block/virtio_blk.ko\n");
  adapt(sda_sdb, 2, NULL);
  assert_string_equal(R.warnings, "");
  assert_true(R.adapted);
}

/* ---- cases of bugs found and fixed in adapt.c ------------------------------------------ */
/* Was a bug: netplan_ifnames reads a block-style "set-name: enp3s0" of a CR LF file with
 * its CR ("enp3s0\r", which ifname_ok refuses): the ID is rightly no name, and
 * the name is lost, so no NIC is pinned, and nothing is said. */
static void netplan_crlf_set_name(void **state)
{
  one_nic("/etc/netplan/01-netcfg.yaml",
          "network:\r\n"
          "  version: 2\r\n"
          "  ethernets:\r\n"
          "    lan:\r\n"
          "      match:\r\n"
          "        macaddress: \"" MAC "\"\r\n"
          "      set-name: enp3s0\r\n",
          "enp3s0");
}

/* Was a bug: "ethernets:" in flow style as a whole (valid netplan) names no NIC: only
 * "ID: {...}" under a block "ethernets:" is read; no NIC is pinned, nothing said. */
static void netplan_flow_ethernets(void **state)
{
  one_nic("/etc/netplan/01-netcfg.yaml",
          "network:\n"
          "  version: 2\n"
          "  ethernets: {enp3s0: {dhcp4: true}}\n",
          "enp3s0");
}

/* Was a bug: fix_grub builds GRUB_SERIAL_COMMAND for a guest whose GRUB is on another
 * port (--unit=1), but writes it only when something else is missing too ("need"
 * leaves !serial_cmd out): with the kernel's console already on ttyS0 and
 * GRUB_TERMINAL serial, GRUB's menu stays on COM2, which the VM does not have. */
static void serial_command_on_com2(void **state)
{
  const char *grub = "GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200\"\n"
                     "GRUB_TERMINAL=\"serial console\"\n"
                     "GRUB_SERIAL_COMMAND=\"serial --speed=115200 --unit=1\"\n";
  grub_guest(grub);
  adapt(sda_sdb, 2, NULL);
  CLEANUP_FREE char *want = vm_strdup_printf("%s%s%s", grub, ADDED_HEAD, ADD_SERIAL);
  assert_string_equal(fg_text("/etc/default/grub"), want);
  assert_true(R.adapted);
}

static int teardown(void **state)
{
  run_free();
  fg_reset();
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(rescue_names_by_order),
    cmocka_unit_test(other_order_never_the_root),
    cmocka_unit_test(server_names_agree),
    cmocka_unit_test(nofail_disk_not_in_stream),
    cmocka_unit_test(ipmi_sol_console_ttyS1),
    cmocka_unit_test(uuid_off_in_if_and_backslash),
    cmocka_unit_test(unreadable_grub_put_back),
    cmocka_unit_test(cmdline_over_two_lines),
    cmocka_unit_test(dropins_get_the_additions),
    cmocka_unit_test(netplan_name_key),
    cmocka_unit_test(netplan_match_id_and_set_name),
    cmocka_unit_test(netplan_crlf),
    cmocka_unit_test(netplan_flow_style),
    cmocka_unit_test(ifupdown_bridge_port),
    cmocka_unit_test(kernel_without_virtio_blk),
    cmocka_unit_test(netplan_crlf_set_name),
    cmocka_unit_test(netplan_flow_ethernets),
    cmocka_unit_test(serial_command_on_com2),
  };
  return cmocka_run_group_tests(tests, NULL, teardown);
}
