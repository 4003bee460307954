/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: the merge journal, FILE.merge-journal beside FILE.
 *
 * A merge writes it before it changes anything and removes it as its
 * very last act.  It names FILE, the target and the intermediate files
 * to remove, each with its unique id, so that a merge killed at any
 * point can be finished by running the same command again, even once
 * FILE no longer leads to the intermediates (merge.c re-points FILE at
 * the target before removing them) or FILE itself is gone.  Ids make
 * sure a file is only ever removed if it is the one that was merged.
 *
 * Text, one entry per line: "vhdtool merge journal 1", then
 * "file|target|remove <32 hex digits> <absolute path>", and after the
 * target "target-new <id> <path>": the identity the merge gives the
 * target (a VHDX file's DataWriteGuid changes when it is written; VHD
 * ids never do, but the line is there all the same).  It is written
 * to a temporary name, synced, and renamed into place, then the
 * directory is synced: it is either absent or complete.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

#define MAGIC "vhdtool merge journal 1"

char *
vhd_journal_path (const char *file)
{
  char *copy1 = strdup (file), *copy2 = strdup (file), *dir = NULL;
  char *r = NULL;

  if (copy1 && copy2 && (dir = realpath (dirname (copy1), NULL)) != NULL &&
      asprintf (&r, "%s/%s.merge-journal", dir, basename (copy2)) == -1)
    r = NULL;
  if (r == NULL)
    vhd_error ("%s: %m", file);
  free (copy1);
  free (copy2);
  free (dir);
  return r;
}

int
vhd_sync_dir (const char *path)
{
  char *copy = strdup (path);
  int fd, r = -1;

  if (copy == NULL)
    return -1;
  fd = open (dirname (copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    r = fsync (fd);
    close (fd);
  }
  if (r == -1)
    vhd_error ("%s: syncing its directory: %m", path);
  free (copy);
  return r;
}

static void
put_entry (FILE *fp, const char *kind, const struct journal_entry *e)
{
  int i;

  fprintf (fp, "%s ", kind);
  for (i = 0; i < 16; i++)
    fprintf (fp, "%02x", e->id[i]);
  fprintf (fp, " %s\n", e->path);
}

int
vhd_journal_write (const char *jpath, const struct merge_journal *j)
{
  char *tmp = NULL;
  FILE *fp = NULL;
  size_t i;
  int fd = -1, r = -1;

  if (strchr (j->file.path, '\n') || strchr (j->target.path, '\n')) {
    vhd_error ("%s: file names with newlines are not supported", jpath);
    errno = EINVAL;
    return -1;
  }
  for (i = 0; i < j->n_remove; i++)
    if (strchr (j->remove[i].path, '\n')) {
      vhd_error ("%s: file names with newlines are not supported", jpath);
      errno = EINVAL;
      return -1;
    }
  /* A fixed temporary name: a kill between creating it and the rename
   * leaves it behind, and the next write (the re-run) truncates and
   * reuses it, so a completed merge never leaves one.  Only one merge of
   * FILE can run at a time (FILE is locked exclusively). */
  if (asprintf (&tmp, "%s.tmp", jpath) == -1) {
    tmp = NULL;
    goto err;
  }
  if ((fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                  0644)) == -1 ||
      (fp = fdopen (fd, "w")) == NULL)
    goto err;
  fd = -1;
  fprintf (fp, "%s\n", MAGIC);
  put_entry (fp, "file", &j->file);
  put_entry (fp, "target", &j->target);
  if (j->has_target_new) {
    struct journal_entry e = { .path = j->target.path };
    memcpy (e.id, j->target_new, 16);
    put_entry (fp, "target-new", &e);
  }
  for (i = 0; i < j->n_remove; i++)
    put_entry (fp, "remove", &j->remove[i]);
  if (fflush (fp) == EOF || fsync (fileno (fp)) == -1)
    goto err;
  if (fclose (fp) == EOF) {
    fp = NULL;
    goto err;
  }
  fp = NULL;
  if (rename (tmp, jpath) == -1)
    goto err;
  free (tmp);
  tmp = NULL;
  r = vhd_sync_dir (jpath);
  return r;

 err:
  vhd_error ("%s: writing the merge journal: %m", jpath);
  if (fp)
    fclose (fp);
  if (fd >= 0)
    close (fd);
  if (tmp) {
    unlink (tmp);
    free (tmp);
  }
  return -1;
}

static int
parse_entry (char *line, const char *kind, struct journal_entry *e)
{
  size_t n = strlen (kind);
  int i;

  if (strncmp (line, kind, n) != 0 || line[n] != ' ' ||
      strlen (line) < n + 1 + 32 + 2 || line[n + 33] != ' ')
    return -1;
  for (i = 0; i < 16; i++) {
    unsigned v;
    if (sscanf (line + n + 1 + 2 * i, "%2x", &v) != 1)
      return -1;
    e->id[i] = v;
  }
  e->path = strdup (line + n + 34);
  return e->path ? 0 : -1;
}

int
vhd_journal_read (const char *jpath, struct merge_journal *j)
{
  FILE *fp = fopen (jpath, "re");
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int n = 0, r = -1;

  memset (j, 0, sizeof *j);
  if (fp == NULL) {
    if (errno != ENOENT)
      vhd_error ("%s: %m", jpath);
    return -1;
  }
  while ((len = getline (&line, &cap, fp)) > 0) {
    struct journal_entry *e;

    if (line[len - 1] == '\n')
      line[len - 1] = '\0';
    if (n == 0) {
      if (strcmp (line, MAGIC) != 0)
        goto bad;
    }
    else if (n == 1) {
      if (parse_entry (line, "file", &j->file) == -1)
        goto bad;
    }
    else if (n == 2) {
      if (parse_entry (line, "target", &j->target) == -1)
        goto bad;
    }
    else if (strncmp (line, "target-new ", 11) == 0) {
      struct journal_entry tn = { .path = NULL };
      if (j->has_target_new || parse_entry (line, "target-new", &tn) == -1)
        goto bad;
      free (tn.path);
      memcpy (j->target_new, tn.id, 16);
      j->has_target_new = true;
    }
    else {
      if (ARRAY_RESERVE (j->remove, j->remove_cap, j->n_remove + 1) == -1)
        goto bad;
      e = j->remove;
      memset (&e[j->n_remove], 0, sizeof *e);
      if (parse_entry (line, "remove", &e[j->n_remove++]) == -1)
        goto bad;
    }
    n++;
  }
  if (n < 3)
    goto bad;
  r = 0;
  goto out;

 bad:
  vhd_error ("%s: not a valid merge journal (move it away to start "
             "afresh)", jpath);
  errno = EINVAL;
  vhd_journal_free (j);
 out:
  free (line);
  fclose (fp);
  return r;
}

void
vhd_journal_free (struct merge_journal *j)
{
  size_t i;

  free (j->file.path);
  free (j->target.path);
  for (i = 0; i < j->n_remove; i++)
    free (j->remove[i].path);
  free (j->remove);
  memset (j, 0, sizeof *j);
}
