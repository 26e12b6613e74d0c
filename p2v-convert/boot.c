/* p2v-convert --boot-test: the new VM booted once, on throwaway qcow2 overlays of
 * its disks (the volumes stay as converted) and with its NICs unplugged (it has
 * the live server's MACs, addresses and host name), until its serial console
 * shows a login prompt or its guest agent answers. */
#include <string.h>

#include "convert.h"

/* The console's last bytes, for the message when the VM does not boot. */
struct tail {
  char buf[4096];
  size_t len;
};

static void keep_tail(void *arg, const char *p, size_t n)
{
  struct tail *t = arg;
  if (n >= sizeof t->buf) {
    p += n - sizeof t->buf;
    n = sizeof t->buf;
  }
  if (t->len + n > sizeof t->buf) {
    size_t drop = t->len + n - sizeof t->buf;
    memmove(t->buf, t->buf + drop, t->len - drop);
    t->len -= drop;
  }
  memcpy(t->buf + t->len, p, n);
  t->len += n;
}

/* The last few printable lines of the console, on stderr. */
static void show_tail(const struct tail *t)
{
  char text[sizeof t->buf + 1];
  size_t k = 0;
  for (size_t i = 0; i < t->len; i++) {
    unsigned char ch = (unsigned char)t->buf[i];
    if (ch == '\n' || (ch >= 0x20 && ch < 0x7f)) text[k++] = (char)ch;
  }
  text[k] = 0;
  /* The last 12 lines. */
  int lines = 0;
  char *start = text + k;
  while (start > text && lines < 12)
    if (*--start == '\n' && start + 1 < text + k) lines++;
  if (*start == '\n') start++;
  if (*start) vm_info("the VM's serial console ended with:\n%s", start);
  else vm_info("the VM printed nothing on its serial console");
}

/* The transient domain's definition: the VM's, under another name and UUID, with
 * the overlays for disks, every NIC unplugged, no metadata and no console log. */
static char *boot_xml(xmlDocPtr doc, const char *name, char **overlays, size_t n)
{
  CLEANUP_XPATHCTX xmlXPathContextPtr ctx = vm_xpath_ctx(doc);
  xmlNodePtr root = xmlDocGetRootElement(doc);
  for (xmlNodePtr c = root->children, next; c; c = next) {
    next = c->next;
    if (c->type == XML_ELEMENT_NODE &&
        (!xmlStrcmp(c->name, BAD_CAST "uuid") || !xmlStrcmp(c->name, BAD_CAST "metadata"))) {
      xmlUnlinkNode(c);
      xmlFreeNode(c);
    }
  }
  xmlNodePtr nm = vm_xml_find(root, "name");
  if (nm) xmlNodeSetContent(nm, BAD_CAST name);
  CLEANUP_XPATHOBJ xmlXPathObjectPtr disks = vm_xpath_nodes(ctx, "/domain/devices/disk[@device='disk']/source");
  for (size_t i = 0; disks && disks->nodesetval && i < (size_t)disks->nodesetval->nodeNr && i < n; i++)
    vm_xml_set(disks->nodesetval->nodeTab[i], "file", overlays[i]);
  CLEANUP_XPATHOBJ xmlXPathObjectPtr nics = vm_xpath_nodes(ctx, "/domain/devices/interface");
  for (int i = 0; nics && nics->nodesetval && i < nics->nodesetval->nodeNr; i++) {
    xmlNodePtr nic = nics->nodesetval->nodeTab[i];
    xmlNodePtr link = vm_xml_find(nic, "link");
    vm_xml_set(link ? link : vm_xml_child(nic, "link", NULL), "state", "down");
  }
  /* UEFI: an <nvram> of the VM is kept: the test boots on the VM's own variables
   * file (which goes with the VM when it is undefined), not on one of its own
   * that nothing would remove. */
  CLEANUP_XPATHOBJ xmlXPathObjectPtr logs = vm_xpath_nodes(ctx, "/domain/devices/serial/log");
  for (int i = 0; logs && logs->nodesetval && i < logs->nodesetval->nodeNr; i++) {
    xmlUnlinkNode(logs->nodesetval->nodeTab[i]);
    xmlFreeNode(logs->nodesetval->nodeTab[i]);
  }
  return vm_xml_dump(doc);
}

/* Waits for the login prompt or the agent; 0, VM_EXIT_VERIFY or an exit code. */
static int watch(virDomainPtr tdom, virStreamPtr st, int timeout_s, const char **how, struct tail *t)
{
  struct vm_follower f = { .sink = keep_tail, .sink_arg = t };
  int64_t deadline = vm_now_ms() + (int64_t)timeout_s * 1000, next_ping = vm_now_ms() + 5000;
  int64_t agent_at = 0; /* when the agent answered */
  bool gone = false;
  for (;;) {
    if (vm_follow_stream(st, &f, "login:", &gone)) {
      *how = "login prompt on the serial console";
      return 0;
    }
    /* The agent answers before boot is over: the login prompt is the better
     * proof, and is waited for a minute more; a guest without a serial getty
     * is proven by its agent. */
    if (agent_at && (vm_now_ms() - agent_at >= 60000 || vm_now_ms() >= deadline)) {
      *how = "guest agent";
      return 0;
    }
    if (vm_interrupted()) return vm_fail_interrupted();
    int state = vm_domain_state(tdom);
    if (state == VIR_DOMAIN_SHUTOFF || state == VIR_DOMAIN_CRASHED || state < 0) {
      vm_warn("the VM stopped during its boot test");
      return VM_EXIT_VERIFY;
    }
    if (gone) {
      vm_warn("the VM's console closed during its boot test");
      return VM_EXIT_VERIFY;
    }
    if (!agent_at && vm_now_ms() >= next_ping) {
      if (vm_agent_answers(tdom)) agent_at = vm_now_ms();
      virResetLastError();
      next_ping = vm_now_ms() + 5000;
    }
    if (vm_now_ms() >= deadline) {
      vm_warn("no login prompt and no guest agent after %d s", timeout_s);
      return VM_EXIT_VERIFY;
    }
    vm_sleep_ms(200);
  }
}

int pc_boot_test(const struct pc_boot *b, json_object *report)
{
  CLEANUP_XMLDOC xmlDocPtr doc = vm_domain_doc(b->dom, VIR_DOMAIN_XML_INACTIVE);
  if (!doc) return VM_EXIT_FAIL;
  struct vm_disk *disks = NULL;
  size_t nd = 0;
  int rc = vm_domain_disks(doc, &disks, &nd);
  if (rc) return rc;
  vm_info("boot test: starting '%s' on overlays of its disks, NICs unplugged (at most %d s)", b->name, b->timeout_s);
  struct vm_strv overlays = { 0 }, names = { 0 };
  virStorageVolPtr vols[VM_MAX_DEVS] = { 0 };
  size_t nvols = 0;
  /* The overlays join the VM's journal record before they are made. */
  for (size_t i = 0; i < nd; i++) {
    if (strcmp(disks[i].device, "disk") != 0) continue;
    vm_strv_addf(&names, "%s-boottest-%zu.qcow2", b->name, overlays.n);
    CLEANUP_FREE char *target = vm_pool_target(b->pool);
    if (!target) {
      rc = VM_EXIT_FAIL;
      goto out;
    }
    vm_strv_addf(&overlays, "%s/%s", target, names.v[overlays.n]);
    if (vm_path_exists(b->conn, overlays.v[overlays.n - 1])) {
      rc = vm_fail(VM_EXIT_STATE, "cannot make the boot test's overlay '%s': it exists", overlays.v[overlays.n - 1]);
      goto out;
    }
    vm_journal_add_volume(b->rec, overlays.v[overlays.n - 1], "new");
  }
  if ((rc = vm_journal_write(b->dom, b->rec))) goto out;
  size_t k = 0;
  for (size_t i = 0; i < nd; i++) {
    if (strcmp(disks[i].device, "disk") != 0) continue;
    struct vm_imginfo info = { 0 };
    if ((rc = vm_image_info(b->conn, disks[i].source, &info))) goto out;
    struct vm_volspec spec = { .name = names.v[k], .format = "qcow2", .capacity = info.capacity,
                               .backing = disks[i].source, .backing_format = disks[i].format };
    vm_imginfo_free(&info);
    if ((rc = vm_vol_create(b->pool, &spec, &vols[nvols]))) goto out;
    nvols++;
    char *p = virStorageVolGetPath(vols[nvols - 1]);
    if (p && strcmp(p, overlays.v[k]) != 0) {
      /* A pool whose volumes are not files of its folder: the record learns the path. */
      free(overlays.v[k]);
      overlays.v[k] = p;
      vm_journal_add_volume(b->rec, p, "new");
      if ((rc = vm_journal_write(b->dom, b->rec))) goto out;
    } else {
      free(p);
    }
    k++;
  }
  {
    CLEANUP_FREE char *tname = vm_strdup_printf("%s-boottest", b->name);
    CLEANUP_FREE char *xml = boot_xml(doc, tname, overlays.v, overlays.n);
    int64_t t0 = vm_now_ms();
    /* Paused until its console is attached; destroyed by libvirtd when this
     * process's connection goes, whatever ends it. */
    virDomainPtr tdom = virDomainCreateXML(b->conn, xml, VIR_DOMAIN_START_PAUSED | VIR_DOMAIN_START_AUTODESTROY);
    if (!tdom) {
      rc = vm_fail_virt("cannot start the boot test of '%s'", b->name);
      goto out;
    }
    virStreamPtr st = virStreamNew(b->conn, VIR_STREAM_NONBLOCK);
    if (!st || virDomainOpenConsole(tdom, NULL, st, VIR_DOMAIN_CONSOLE_SAFE) < 0) {
      rc = vm_fail_virt("cannot attach to the console of the boot test");
    } else if (virDomainResume(tdom) < 0) {
      rc = vm_fail_virt("cannot start the boot test's vCPUs");
    } else {
      struct tail t = { .len = 0 };
      const char *how = NULL;
      rc = watch(tdom, st, b->timeout_s, &how, &t);
      int64_t ms = vm_now_ms() - t0;
      json_object *bt = json_object_new_object();
      json_object_object_add(bt, "booted", json_object_new_boolean(rc == 0));
      json_object_object_add(bt, "seconds", json_object_new_double((double)ms / 1000.0));
      if (how) json_object_object_add(bt, "proof", json_object_new_string(how));
      json_object_object_add(report, "boot_test", bt);
      if (rc == 0) vm_info("boot test: '%s' booted in %.0f s (%s)", b->name, (double)ms / 1000.0, how);
      else if (rc == VM_EXIT_VERIFY) show_tail(&t);
    }
    if (st) {
      virStreamAbort(st);
      virResetLastError();
      virStreamFree(st);
    }
    if (virDomainDestroy(tdom) < 0) virResetLastError();
    virDomainFree(tdom);
  }
out:
  /* The overlays go, then their names leave the record. */
  for (size_t i = 0; i < nvols; i++) {
    if (virStorageVolDelete(vols[i], 0) < 0)
      vm_warn("cannot remove the boot test's overlay '%s': %s (remove it by hand)", overlays.v[i], vm_virt_message());
    virStorageVolFree(vols[i]);
  }
  vm_storage_changed();
  vm_disks_free(disks, nd);
  vm_strv_free(&overlays);
  vm_strv_free(&names);
  return rc;
}
