/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool scan: the forest of VHD/VHDX files in some directories.
 *
 * Every file found is opened alone (no parents), read-only and without
 * a lock, and only what says who it is and who its parent is gets
 * read.  The trees are built from identities (VHD unique id and parent
 * unique id; VHDX DataWriteGuid and parent_linkage / parent_linkage2),
 * never from locators.  Then, for each differencing disk, the library's
 * own parent search is run for one step (vhd_layer_find_parent) to see
 * where its locators lead, and the two answers are compared: that is
 * the verdict (see vhdtool(1), "vhdtool scan").
 *
 * Nothing is opened for writing, except by --fix-locators, which runs
 * the library's set-parent (crash-safe) for exactly the repairs
 * printed.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "vhdtool.h"

enum kind { DISK, DAMAGED, NOT_DISK };

enum verdict {
  V_NONE,                       /* not a differencing disk */
  V_OK, V_MISSING, V_STALE, V_MISMATCH, V_LOOP, V_DUPLICATE,
};

static const char *const verdict_text[] = {
  [V_NONE] = "", [V_OK] = "ok", [V_MISSING] = "parent missing",
  [V_STALE] = "locators stale", [V_MISMATCH] = "identity mismatch",
  [V_LOOP] = "loop", [V_DUPLICATE] = "duplicate identity",
};
static const char *const verdict_key[] = {
  [V_NONE] = "", [V_OK] = "ok", [V_MISSING] = "parent-missing",
  [V_STALE] = "locators-stale", [V_MISMATCH] = "identity-mismatch",
  [V_LOOP] = "loop", [V_DUPLICATE] = "duplicate-identity",
};

struct node {
  char *path;                   /* as found: argument + entry names */
  char *real;                   /* realpath(3) */
  time_t mtime;
  enum kind kind;
  char *reason;                 /* DAMAGED, NOT_DISK: why */
  struct vhd_layer_info info;   /* DISK */
  /* Differencing: where the locators lead (loc_path), or why nowhere. */
  char *loc_path;
  char loc_id[37];
  time_t loc_created, loc_mtime;
  char *loc_error;
  /* The verdict. */
  long parent;                  /* node of the parent in the forest, -1 */
  enum verdict verdict;
  char *detail;
  long fix;                     /* V_STALE: the parent to point at */
  int repaired;                 /* --fix-locators: 1 done, -1 failed */
  bool printed;
};

static struct node *nodes;
static size_t n_nodes, nodes_cap;
static bool cannot_scan;        /* an argument could not be read */

/* Directories and files already seen (by device and inode): symlinks
 * may lead to either twice, or in a loop. */
struct seen { dev_t dev; ino_t ino; };
static struct seen *seen;
static size_t n_seen, seen_cap;

static bool
already_seen (const struct stat *st)
{
  size_t i;

  for (i = 0; i < n_seen; i++)
    if (seen[i].dev == st->st_dev && seen[i].ino == st->st_ino)
      return true;
  if (ARRAY_RESERVE (seen, seen_cap, n_seen + 1) == 0)
    seen[n_seen++] = (struct seen) { st->st_dev, st->st_ino };
  return false;
}

/* Messages while files are probed: the damage of a file is its
 * verdict, not an error of vhdtool. */
static char quiet_error[1024];

static void
quiet (enum vhd_msg_level level, const char *msg)
{
  if (level == VHD_MSG_ERROR)
    snprintf (quiet_error, sizeof quiet_error, "%s", msg);
}

/* Check mode: the first problem found. */
static void
first_problem (void *opaque, const char *file, const char *structure,
               const char *what)
{
  char *buf = opaque;

  if (buf[0] == '\0')
    snprintf (buf, 1024, "%s", what);
}

static char *
xstrdup (const char *s)
{
  char *r = strdup (s ? s : "");

  if (r == NULL) {
    perror (progname);
    exit (EXIT_USAGE);
  }
  return r;
}

static char *
xasprintf (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
static char *
xasprintf (const char *fs, ...)
{
  va_list args;
  char *r;
  int n;

  va_start (args, fs);
  n = vasprintf (&r, fs, args);
  va_end (args);
  if (n == -1) {
    perror (progname);
    exit (EXIT_USAGE);
  }
  return r;
}

static struct node *
new_node (const char *path, const struct stat *st, enum kind kind)
{
  struct node *x;

  if (ARRAY_RESERVE (nodes, nodes_cap, n_nodes + 1) == -1) {
    perror (progname);
    exit (EXIT_USAGE);
  }
  x = &nodes[n_nodes++];
  memset (x, 0, sizeof *x);
  x->path = xstrdup (path);
  x->real = realpath (path, NULL);
  if (x->real == NULL)
    x->real = xstrdup (path);
  x->mtime = st->st_mtime;
  x->kind = kind;
  x->parent = x->fix = -1;
  return x;
}

/* Where the locators of differencing disk l lead.  Not in check mode:
 * that would open the file found twice (the search's quiet open, then
 * one reporting its problems), and only the identity matters here. */
static void
resolve_locators (struct node *x, struct vhd_layer *l,
                  const struct vhd_open_options *o)
{
  struct vhd_layer *p;
  struct vhd_layer_info pi;
  struct stat st;

  quiet_error[0] = '\0';
  if (vhd_layer_find_parent (l, o, &p) == -1) {
    x->loc_error = xstrdup (quiet_error[0] ? quiet_error : strerror (errno));
    return;
  }
  vhd_layer_describe (p, &pi);
  x->loc_path = xstrdup (vhd_layer_path (p));
  memcpy (x->loc_id, pi.id, sizeof x->loc_id);
  x->loc_created = pi.created;
  if (stat (x->loc_path, &st) == 0)
    x->loc_mtime = st.st_mtime;
  vhd_layer_info_free (&pi);
  vhd_layer_close (p);
}

static void
add_file (const char *path, const struct stat *st, bool named)
{
  struct vhd_open_options o = {
    .readonly = true, .no_lock = true, .no_parents = true,
    .headers_only = true,
  };
  struct vhd_layer *l = NULL;
  struct node *x;

  if (already_seen (st))
    return;
  if (!S_ISREG (st->st_mode) || vhd_probe_format (path) == NULL) {
    if (named) {
      x = new_node (path, st, NOT_DISK);
      x->reason = xstrdup (S_ISREG (st->st_mode)
                           ? "not a VHD or VHDX file"
                           : "not a regular file");
    }
    return;
  }
  quiet_error[0] = '\0';
  if (vhd_layer_open (path, false, &o, &l) == -1) {
    char why[1024] = "";

    /* Check mode, for the first thing wrong with it. */
    o.problem = first_problem;
    o.problem_opaque = why;
    if (vhd_layer_open (path, false, &o, &l) == 0)
      vhd_layer_close (l);
    x = new_node (path, st, DAMAGED);
    x->reason = xstrdup (why[0] ? why : quiet_error);
    return;
  }
  x = new_node (path, st, DISK);
  vhd_layer_describe (l, &x->info);
  if (x->info.type == VHD_TYPE_DIFF)
    resolve_locators (x, l, &o);
  vhd_layer_close (l);
}

static void add_dir (const char *dir, const struct stat *st, bool recurse);

/* A name that says "virtual disk": a file so named that is not one is
 * reported (a truncated copy, a zero-filled file), where any other file
 * of a directory that is not one is skipped without a word. */
static bool
disk_name (const char *name)
{
  static const char *const exts[] = { ".vhd", ".vhdx", ".avhd", ".avhdx" };
  size_t len = strlen (name), i;

  for (i = 0; i < sizeof exts / sizeof exts[0]; i++) {
    size_t e = strlen (exts[i]);

    if (len > e && strcasecmp (name + len - e, exts[i]) == 0)
      return true;
  }
  return false;
}

static char *
join (const char *dir, const char *name)
{
  size_t len = strlen (dir);

  return xasprintf ("%s%s%s", dir, len && dir[len - 1] == '/' ? "" : "/",
                    name);
}

static void
add_dir (const char *dir, const struct stat *dst, bool recurse)
{
  struct dirent **list;
  int n, i;

  if (already_seen (dst))
    return;
  n = scandir (dir, &list, NULL, alphasort);
  if (n == -1) {
    fprintf (stderr, "%s: scan: %s: %m\n", progname, dir);
    cannot_scan = true;
    return;
  }
  for (i = 0; i < n; i++) {
    const char *name = list[i]->d_name;
    struct stat st;
    char *path;

    if (strcmp (name, ".") == 0 || strcmp (name, "..") == 0) {
      free (list[i]);
      continue;
    }
    path = join (dir, name);
    /* stat follows symlinks; a dangling one (or a loop of them) fails
     * and is skipped. */
    if (stat (path, &st) == 0) {
      if (S_ISDIR (st.st_mode)) {
        if (recurse)
          add_dir (path, &st, recurse);
      }
      else if (S_ISREG (st.st_mode))
        add_file (path, &st, disk_name (name));
    }
    free (path);
    free (list[i]);
  }
  free (list);
}

/* ------------------------------------------------------------ verdicts */

static bool
is_parent_of (const struct node *p, const struct node *c)
{
  return p->kind == DISK && strcmp (p->info.format, c->info.format) == 0 &&
         (strcmp (p->info.id, c->info.parent_id) == 0 ||
          (c->info.parent_id2[0] &&
           strcmp (p->info.id, c->info.parent_id2) == 0));
}

static long
node_at (const char *real)
{
  size_t i;

  for (i = 0; i < n_nodes; i++)
    if (strcmp (nodes[i].real, real) == 0)
      return i;
  return -1;
}

static void
format_time (time_t t, char *buf, size_t len)
{
  struct tm tm;

  gmtime_r (&t, &tm);
  strftime (buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Text for an identity mismatch: what the dates say happened. */
static char *
mismatch_detail (const struct node *x)
{
  char t1[32], t2[32], t3[32];
  const char *what;

  format_time (x->loc_mtime, t3, sizeof t3);
  if (strcmp (x->info.format, "VHDX") == 0)
    return xasprintf ("its locators lead to %s, whose identity (DataWriteGuid)"
                      " is %s, not %s: it was modified (a VHDX file gets a "
                      "new identity when it is written to) or replaced "
                      "after the child was made; it was last modified at %s",
                      x->loc_path, x->loc_id, x->info.parent_id, t3);
  format_time (x->info.parent_time, t1, sizeof t1);
  format_time (x->loc_created, t2, sizeof t2);
  if (x->loc_created > x->info.parent_time)
    what = "it was replaced after the child was made: it was created at "
           "%s, after the parent time stamp the child records, %s; last "
           "modified at %s";
  else if (x->loc_mtime > x->info.parent_time)
    what = "it was modified after the child was made: created at %s, "
           "before the parent time stamp the child records, %s, but last "
           "modified at %s";
  else
    what = "it was changed: created at %s; the child records the parent "
           "time stamp %s; last modified at %s";
  {
    char *how = xasprintf (what, t2, t1, t3);
    char *r = xasprintf ("its locators lead to %s, whose unique id is %s, "
                         "not %s: %s", x->loc_path, x->loc_id,
                         x->info.parent_id, how);
    free (how);
    return r;
  }
}

static char *
same_identity_list (const long *m, size_t n, const char *outside)
{
  char *r = xstrdup (""), *t;
  size_t i;

  for (i = 0; i < n; i++) {
    t = xasprintf ("%s%s%s", r, i ? ", " : "", nodes[m[i]].path);
    free (r);
    r = t;
  }
  if (outside) {
    t = xasprintf ("%s, %s", r, outside);
    free (r);
    r = t;
  }
  return r;
}

static void
judge (size_t ci)
{
  struct node *c = &nodes[ci];
  long *m = NULL, at = -1;
  size_t n = 0, cap = 0, i;
  bool loc_ok, in_m = false;

  for (i = 0; i < n_nodes; i++)
    if (is_parent_of (&nodes[i], c)) {
      if (ARRAY_RESERVE (m, cap, n + 1) == -1) {
        perror (progname);
        exit (EXIT_USAGE);
      }
      m[n++] = i;
    }
  if (c->loc_path)
    at = node_at (c->loc_path);
  for (i = 0; i < n; i++)
    in_m |= m[i] == at;
  loc_ok = c->loc_path &&
           (strcmp (c->loc_id, c->info.parent_id) == 0 ||
            (c->info.parent_id2[0] &&
             strcmp (c->loc_id, c->info.parent_id2) == 0));

  if (loc_ok) {
    size_t count = n + (in_m ? 0 : 1);

    if (count >= 2) {
      char *list = same_identity_list (m, n, in_m ? NULL : c->loc_path);
      c->verdict = V_DUPLICATE;
      c->parent = in_m ? at : (long) m[0];
      c->detail = xasprintf ("files with its parent's identity %s: %s; its "
                             "locators choose %s", c->info.parent_id, list,
                             in_m ? nodes[at].path : c->loc_path);
      free (list);
    }
    else {
      c->verdict = V_OK;
      c->parent = at;
      if (at < 0)
        c->detail = xasprintf ("its parent %s is not among the files "
                               "scanned", c->loc_path);
    }
  }
  else if (n == 1) {
    c->verdict = V_STALE;
    c->parent = c->fix = m[0];
    if (c->loc_path)
      c->detail = xasprintf ("its parent is %s, but its locators lead to %s, "
                             "whose identity is %s", nodes[m[0]].path,
                             c->loc_path, c->loc_id);
    else
      c->detail = xasprintf ("its parent is %s, but its locators lead "
                             "nowhere: %s", nodes[m[0]].path, c->loc_error);
  }
  else if (n >= 2) {
    char *list = same_identity_list (m, n, NULL);
    c->verdict = V_DUPLICATE;
    c->parent = m[0];
    c->detail = xasprintf ("files with its parent's identity %s: %s; its "
                           "locators choose none of them (%s %s)",
                           c->info.parent_id, list,
                           c->loc_path ? "they lead to" : "",
                           c->loc_path ? c->loc_path : c->loc_error);
    free (list);
  }
  else if (c->loc_path) {
    c->verdict = V_MISMATCH;
    c->detail = mismatch_detail (c);
  }
  else {
    c->verdict = V_MISSING;
    c->detail = xasprintf ("no file scanned has its parent's identity %s; "
                           "%s", c->info.parent_id, c->loc_error);
  }
  free (m);
}

/* Nodes whose parent links go round in a circle: verdict loop, and the
 * links cut so that every node is printed once. */
static void
find_loops (void)
{
  size_t i, k;

  for (i = 0; i < n_nodes; i++) {
    long p;

    /* On a cycle: n_nodes links from i come back to i. */
    for (p = nodes[i].parent, k = 0; p >= 0 && p != (long) i && k < n_nodes;
         p = nodes[p].parent, k++)
      ;
    if (p != (long) i)
      continue;
    {
      char *cycle = xstrdup (nodes[i].path), *t;

      for (p = nodes[i].parent; p != (long) i; p = nodes[p].parent) {
        t = xasprintf ("%s -> %s", cycle, nodes[p].path);
        free (cycle);
        cycle = t;
      }
      t = xasprintf ("%s -> %s", cycle, nodes[i].path);
      free (cycle);
      free (nodes[i].detail);
      nodes[i].detail = xasprintf ("its parent by identity is its own "
                                   "descendant: %s", t);
      free (t);
      nodes[i].verdict = V_LOOP;
      nodes[i].fix = -1;
    }
  }
  for (i = 0; i < n_nodes; i++)
    if (nodes[i].verdict == V_LOOP)
      nodes[i].parent = -1;
}

static bool
is_problem (const struct node *x)
{
  if (x->kind != DISK)
    return true;
  if (x->verdict == V_STALE && x->repaired == 1)
    return false;
  return x->verdict != V_NONE && x->verdict != V_OK;
}

/* ------------------------------------------------------------ output */

/* path as one shell word. */
static void
shell_word (FILE *fp, const char *s)
{
  if (s[0] && strspn (s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789_./+-=:,@%") == strlen (s)) {
    fputs (s, fp);
    return;
  }
  fputc ('\'', fp);
  for (; *s; s++)
    if (*s == '\'')
      fputs ("'\\''", fp);
    else
      fputc (*s, fp);
  fputc ('\'', fp);
}

static void
print_repair (FILE *fp, const struct node *x)
{
  fputs ("vhdtool set-parent ", fp);
  shell_word (fp, x->path);
  fputc (' ', fp);
  shell_word (fp, nodes[x->fix].path);
}

static void
print_tree_text (size_t i, int depth)
{
  struct node *x = &nodes[i];
  char size_h[32], alloc_h[32];
  size_t k;

  x->printed = true;
  human_size (x->info.size, size_h, sizeof size_h);
  human_size (x->info.allocated_known ? x->info.allocated
              : x->info.file_size, alloc_h, sizeof alloc_h);
  printf ("%*s%s [%s %s, %s, %s %s]", depth * 2, "", x->path,
          x->info.format, vhd_type_name (x->info.type), size_h,
          x->info.allocated_known ? "allocated" : "file", alloc_h);
  if (x->verdict != V_NONE)
    printf (": %s", verdict_text[x->verdict]);
  printf ("\n");
  if (x->detail)
    printf ("%*s  %s\n", depth * 2, "", x->detail);
  if (x->fix >= 0) {
    printf ("%*s  %s: ", depth * 2, "",
            x->repaired == 1 ? "repaired" : x->repaired == -1
            ? "repair failed" : "repair");
    print_repair (stdout, x);
    printf ("\n");
  }
  for (k = 0; k < n_nodes; k++)
    if (nodes[k].parent == (long) i && !nodes[k].printed)
      print_tree_text (k, depth + 1);
}

static void
print_tree_json (size_t i, int depth)
{
  struct node *x = &nodes[i];
  const struct vhd_layer_info *f = &x->info;
  size_t k;
  bool first = true;
  int ind = depth * 2 + 4;

  x->printed = true;
  printf ("%*s{ \"path\": ", ind, "");
  json_string (stdout, x->path);
  printf (", \"real-path\": ");
  json_string (stdout, x->real);
  printf (",\n%*s  \"format\": \"%s\", \"type\": \"%s\", \"virtual-size\": %"
          PRIu64 ", \"allocated\": ", ind, "", f->format,
          vhd_type_name (f->type), f->size);
  if (f->allocated_known)
    printf ("%" PRIu64, f->allocated);
  else
    printf ("null");
  printf (", \"file-size\": %" PRIu64 ", \"id\": \"%s\"", f->file_size,
          f->id);
  if (x->verdict != V_NONE) {
    printf (",\n%*s  \"parent-id\": \"%s\"", ind, "", f->parent_id);
    if (f->parent_id2[0])
      printf (", \"parent-id2\": \"%s\"", f->parent_id2);
    printf (", \"verdict\": \"%s\", \"detail\": ", verdict_key[x->verdict]);
    json_string (stdout, x->detail);
    printf (",\n%*s  \"locators-lead-to\": ", ind, "");
    if (x->loc_path)
      json_string (stdout, x->loc_path);
    else
      printf ("null");
    if (x->fix >= 0) {
      printf (", \"repair\": [\"vhdtool\", \"set-parent\", ");
      json_string (stdout, x->path);
      printf (", ");
      json_string (stdout, nodes[x->fix].path);
      printf ("], \"repaired\": %s", x->repaired == 1 ? "true" : "false");
    }
  }
  printf (",\n%*s  \"children\": [", ind, "");
  for (k = 0; k < n_nodes; k++)
    if (nodes[k].parent == (long) i && !nodes[k].printed) {
      printf ("%s\n", first ? "" : ",");
      first = false;
      print_tree_json (k, depth + 2);
    }
  if (!first)
    printf ("\n%*s  ", ind, "");
  printf ("] }");
}

static bool
is_root (const struct node *x)
{
  return x->kind == DISK && x->parent < 0;
}

static void
print_text (size_t problems, size_t trees)
{
  size_t i;

  for (i = 0; i < n_nodes; i++)
    if (is_root (&nodes[i]))
      print_tree_text (i, 0);
  for (i = 0; i < n_nodes; i++)
    if (nodes[i].kind != DISK)
      printf ("%s: %s: %s\n", nodes[i].path,
              nodes[i].kind == DAMAGED ? "damaged" : "not a virtual disk",
              nodes[i].reason);
  printf ("%zu file%s, %zu tree%s, %zu problem%s\n", n_nodes,
          n_nodes == 1 ? "" : "s", trees, trees == 1 ? "" : "s", problems,
          problems == 1 ? "" : "s");
}

static void
print_json (size_t problems, int status)
{
  size_t i;
  bool first = true;

  printf ("{\n  \"status\": \"%s\",\n  \"files\": %zu,\n  \"problems\": %zu,"
          "\n  \"trees\": [", status == EXIT_OK ? "whole"
          : status == EXIT_FAILED ? "problems" : "cannot-scan", n_nodes,
          problems);
  for (i = 0; i < n_nodes; i++)
    if (is_root (&nodes[i])) {
      printf ("%s\n", first ? "" : ",");
      first = false;
      print_tree_json (i, 0);
    }
  printf ("%s],\n  \"others\": [", first ? "" : "\n  ");
  first = true;
  for (i = 0; i < n_nodes; i++)
    if (nodes[i].kind != DISK) {
      printf ("%s\n    { \"path\": ", first ? "" : ",");
      first = false;
      json_string (stdout, nodes[i].path);
      printf (", \"verdict\": \"%s\", \"reason\": ",
              nodes[i].kind == DAMAGED ? "damaged" : "not-a-disk");
      json_string (stdout, nodes[i].reason);
      printf (" }");
    }
  printf ("%s]\n}\n", first ? "" : "\n  ");
}

/* ------------------------------------------------------------ command */

static void
scan_help (void)
{
  printf ("Usage: vhdtool scan [--json] [-r] [--fix-locators] DIR|FILE...\n"
          "\n"
          "Find the VHD and VHDX files among DIRs' entries and the FILEs\n"
          "(by content, whatever their names), build the trees of parents\n"
          "and children from the files' own identities, and say for every\n"
          "differencing disk whether its locators lead to its parent: ok,\n"
          "parent missing, locators stale (with the set-parent command that\n"
          "repairs it), identity mismatch, loop, duplicate identity.  Files are opened read-only, one at a time, and only\n"
          "their headers are read.\n"
          "\n"
          "  --json                machine-readable output\n"
          "  -r, --recursive       also scan the subdirectories of DIRs\n"
          "  --fix-locators        run the printed set-parent repairs (only\n"
          "                        for locators stale)\n"
          "\n"
          "Exit status: 0 every chain is whole, 1 problems found (left after\n"
          "--fix-locators), 2 something could not be scanned or bad usage.\n");
}

int
cmd_scan (int argc, char **argv)
{
  static const struct option long_opts[] = {
    { "json", no_argument, NULL, 'j' },
    { "recursive", no_argument, NULL, 'r' },
    { "fix-locators", no_argument, NULL, 'F' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  bool json = false, recurse = false, fix = false;
  size_t i, problems = 0, trees = 0;
  int ch, status;

  while ((ch = getopt_long (argc, argv, "hr", long_opts, NULL)) != -1) {
    switch (ch) {
    case 'j': json = true; break;
    case 'r': recurse = true; break;
    case 'F': fix = true; break;
    case 'h':
      scan_help ();
      return EXIT_OK;
    default:
      usage_error ("scan: bad option");
      return EXIT_USAGE;
    }
  }
  if (optind >= argc) {
    usage_error ("scan takes at least one DIR or FILE");
    return EXIT_USAGE;
  }

  vhd_set_message_handler (quiet);
  for (i = optind; i < (size_t) argc; i++) {
    struct stat st;

    if (stat (argv[i], &st) == -1) {
      fprintf (stderr, "%s: scan: %s: %m\n", progname, argv[i]);
      cannot_scan = true;
    }
    else if (S_ISDIR (st.st_mode))
      add_dir (argv[i], &st, recurse);
    else
      add_file (argv[i], &st, true);
  }
  tool_init ();

  for (i = 0; i < n_nodes; i++)
    if (nodes[i].kind == DISK && nodes[i].info.type == VHD_TYPE_DIFF)
      judge (i);
  find_loops ();

  if (fix) {
    struct vhd_set_parent_params p = { .step = test_step };

    for (i = 0; i < n_nodes; i++)
      if (nodes[i].verdict == V_STALE && nodes[i].fix >= 0)
        nodes[i].repaired = vhd_set_parent (nodes[i].path,
                                            nodes[nodes[i].fix].path,
                                            &p) == 0 ? 1 : -1;
  }

  for (i = 0; i < n_nodes; i++) {
    problems += is_problem (&nodes[i]);
    trees += is_root (&nodes[i]);
  }
  status = cannot_scan ? EXIT_USAGE : problems ? EXIT_FAILED : EXIT_OK;
  if (json)
    print_json (problems, status);
  else
    print_text (problems, trees);

  for (i = 0; i < n_nodes; i++) {
    free (nodes[i].path);
    free (nodes[i].real);
    free (nodes[i].reason);
    free (nodes[i].loc_path);
    free (nodes[i].loc_error);
    free (nodes[i].detail);
    if (nodes[i].kind == DISK)
      vhd_layer_info_free (&nodes[i].info);
  }
  free (nodes);
  free (seen);
  return status;
}
