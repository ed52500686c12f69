/*
 * runner.c — times short-lived commands for benches/compare.sh (not a test).
 *
 * Runs several commands in rounds, interleaved (A, B, C, A, B, C, …), so that
 * noise from the shared machine (other builds, frequency changes) falls on
 * all of them alike, and prints each one's median and spread of wall time.
 * Wall time is measured from just before posix_spawn to just after waitpid,
 * so it includes everything a caller such as git pays: exec, dynamic
 * loading, the process's own work and its exit.
 *
 * Usage:
 *   runner [-n RUNS] [-w WARMUP] [-x EXPECT] [-o RAWFILE] -- SPEC ;; SPEC ;; ...
 *   SPEC = NAME STDIN_FILE PROGRAM [ARG...]
 *
 * PROGRAM must be an absolute path (no PATH search: it would be timed too).
 * A NAME starting with '-' is a step that runs in every round, in its place,
 * but is not timed or reported (e.g. "-stop": stop the daemon before a cold
 * start). Each timed command's stdout goes to a file under $TMPDIR (truncated
 * before each run) and, with -x, must contain EXPECT, else the run counts as
 * a bad answer. stderr goes to /dev/null. A run that exits non-zero or whose
 * answer is bad is counted and left out of the statistics.
 *
 * Output, one line per timed command (times in microseconds):
 *   NAME median=… p10=… p90=… min=… mean=… ok=N failed=N
 * With -o, every timed run is appended to RAWFILE as "NAME round micros".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_SPECS 16

struct spec {
    const char *name;
    const char *input;
    char **argv;
    int timed;
    char out_path[4096];
    double *micros;
    int ok;
    int failed;
};

static double now_micros(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *sorted, int n, double p)
{
    int rank = (int)(p * (n - 1) + 0.5);
    return sorted[rank];
}

/* Whether the file at path contains needle (reads at most 64 KiB). */
static int file_contains(const char *path, const char *needle)
{
    static char buf[65536 + 1];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t total = 0, got;
    while (total < 65536 && (got = read(fd, buf + total, 65536 - total)) > 0)
        total += got;
    close(fd);
    buf[total] = '\0';
    return memmem(buf, (size_t)total, needle, strlen(needle)) != NULL;
}

/* Runs one command; returns its wall time in microseconds, or -1 when it
 * could not be started or did not exit 0. */
static double run_once(struct spec *s)
{
    /* Files are opened before the clock starts: the same for every command,
     * and not what is being compared. */
    int in = open(s->input, O_RDONLY);
    int out = s->timed ? open(s->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600)
                       : open("/dev/null", O_WRONLY);
    int err = open("/dev/null", O_WRONLY);
    if (in < 0 || out < 0 || err < 0) {
        fprintf(stderr, "runner: %s: cannot open its files: %s\n", s->name, strerror(errno));
        exit(2);
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in, 0);
    posix_spawn_file_actions_adddup2(&actions, out, 1);
    posix_spawn_file_actions_adddup2(&actions, err, 2);
    pid_t pid;
    double start = now_micros();
    int spawned = posix_spawn(&pid, s->argv[0], &actions, NULL, s->argv, environ);
    int status = 0;
    if (spawned == 0) {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
    double end = now_micros();
    posix_spawn_file_actions_destroy(&actions);
    close(in);
    close(out);
    close(err);
    if (spawned != 0) {
        fprintf(stderr, "runner: cannot start %s: %s\n", s->argv[0], strerror(spawned));
        exit(2);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    return end - start;
}

static void usage(void)
{
    fprintf(stderr, "usage: runner [-n RUNS] [-w WARMUP] [-x EXPECT] [-o RAWFILE] -- "
                    "NAME STDIN PROGRAM [ARG...] ;; ...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int runs = 100, warmup = 5;
    const char *expect = NULL, *raw_path = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "n:w:x:o:")) != -1) {
        switch (opt) {
        case 'n': runs = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 'x': expect = optarg; break;
        case 'o': raw_path = optarg; break;
        default: usage();
        }
    }
    if (runs < 1 || warmup < 0)
        usage();
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0')
        tmp = "/tmp";

    struct spec specs[MAX_SPECS];
    int count = 0;
    int i = optind;
    while (i < argc) {
        if (count == MAX_SPECS)
            usage();
        struct spec *s = &specs[count];
        memset(s, 0, sizeof *s);
        if (argc - i < 3)
            usage();
        s->name = argv[i];
        s->input = argv[i + 1];
        s->argv = &argv[i + 2];
        s->timed = s->name[0] != '-';
        int j = i + 2;
        while (j < argc && strcmp(argv[j], ";;") != 0)
            j++;
        if (j < argc)
            argv[j] = NULL; /* ends this command's argv */
        if (s->argv[0][0] != '/') {
            fprintf(stderr, "runner: %s: give an absolute path\n", s->argv[0]);
            return 2;
        }
        snprintf(s->out_path, sizeof s->out_path, "%s/runner-%d-%d.out", tmp, (int)getpid(), count);
        s->micros = calloc((size_t)runs, sizeof(double));
        if (s->micros == NULL)
            return 2;
        count++;
        i = j + 1;
    }
    if (count == 0)
        usage();

    FILE *raw = NULL;
    if (raw_path != NULL && (raw = fopen(raw_path, "a")) == NULL) {
        fprintf(stderr, "runner: cannot open %s\n", raw_path);
        return 2;
    }
    for (int round = -warmup; round < runs; round++) {
        for (int k = 0; k < count; k++) {
            struct spec *s = &specs[k];
            double t = run_once(s);
            if (!s->timed || round < 0)
                continue;
            if (t >= 0 && expect != NULL && !file_contains(s->out_path, expect))
                t = -1;
            if (t < 0) {
                s->failed++;
                continue;
            }
            s->micros[s->ok++] = t;
            if (raw != NULL)
                fprintf(raw, "%s %d %.1f\n", s->name, round, t);
        }
    }
    if (raw != NULL)
        fclose(raw);

    for (int k = 0; k < count; k++) {
        struct spec *s = &specs[k];
        if (!s->timed)
            continue;
        unlink(s->out_path);
        if (s->ok == 0) {
            printf("%s median=nan p10=nan p90=nan min=nan mean=nan ok=0 failed=%d\n", s->name,
                   s->failed);
            continue;
        }
        qsort(s->micros, (size_t)s->ok, sizeof(double), cmp_double);
        double sum = 0;
        for (int r = 0; r < s->ok; r++)
            sum += s->micros[r];
        printf("%s median=%.1f p10=%.1f p90=%.1f min=%.1f mean=%.1f ok=%d failed=%d\n", s->name,
               percentile(s->micros, s->ok, 0.5), percentile(s->micros, s->ok, 0.1),
               percentile(s->micros, s->ok, 0.9), s->micros[0], sum / s->ok, s->ok, s->failed);
    }
    return 0;
}
