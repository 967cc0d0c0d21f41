# test_nbclient.py: nbclient executes nbclient.ipynb (streams, an execute_result, display_data
# with text/html and matplotlib's image/png, an error kept by allow_errors, markdown cells) once
# with ipykernel and once with the kernelspec under test; the saved notebooks must match.
#
# What is compared, cell by cell, in the notebooks as nbformat saved and read them back:
# - every cell's type and source, and a code cell's execution_count;
# - each output's output_type, in order, except that stream outputs are merged per stream name
#   (the concatenated text of all "stdout" outputs, then of all "stderr" ones, compared exactly):
#   both kernels batch writes into stream messages on their own timers, so how text is cut into
#   outputs, and the order between stdout and stderr, are not defined by the protocol;
# - execute_result: its execution_count; execute_result and display_data: the set of MIME keys,
#   and each value exactly, except images (image/png): base64 that decodes to a PNG whose pixel
#   width and height are compared, not its bytes (zlib and metadata chunks may differ);
# - error: ename and evalue exactly, and the traceback's last line with ANSI colour codes
#   removed ("ValueError: ..."): the frames above it are each kernel's own presentation
#   (IPython writes "Cell In [5], line 1" and coloured source context).
# Not compared: output and cell metadata (nbclient's timings, backend hints), and the notebook's
# metadata (kernelspec and language_info name the kernel that ran it).
import os
import shutil
import struct
import tempfile
import unittest

import wire

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOK = os.path.join(HERE, "nbclient.ipynb")
REFERENCE = "python3"


def execute(kernel_name, workdir):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name=kernel_name, timeout=int(wire.TIMEOUT), allow_errors=True,
                   resources={"metadata": {"path": workdir}}).execute()
    saved = os.path.join(workdir, kernel_name + ".ipynb")
    nbformat.write(nb, saved)
    return nbformat.read(saved, as_version=4)


def png_size(b64):
    """'png WxH' of a base64 PNG, from its IHDR chunk."""
    data = wire.b64decode(b64)
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return "not a PNG"
    return "png %dx%d" % struct.unpack(">II", data[16:24])


def bundle(data):
    return {mime: (png_size(v) if mime == "image/png" else v) for mime, v in data.items()}


def normalise(nb):
    """The notebook as the comparison sees it (see the comment at the top)."""
    cells = []
    for cell in nb.cells:
        c = {"cell_type": cell.cell_type, "source": cell.source}
        if cell.cell_type == "code":
            c["execution_count"] = cell.execution_count
            outs, streams = [], {}
            for o in cell.outputs:
                t = o.output_type
                if t == "stream":
                    streams[o.name] = streams.get(o.name, "") + o.text
                elif t == "execute_result":
                    outs.append({"output_type": t, "execution_count": o.execution_count,
                                 "data": bundle(o.data)})
                elif t == "display_data":
                    outs.append({"output_type": t, "data": bundle(o.data)})
                elif t == "error":
                    last = wire.strip_ansi(o.traceback[-1]).strip() if o.traceback else None
                    outs.append({"output_type": t, "ename": o.ename, "evalue": o.evalue,
                                 "traceback_last_line": last})
                else:
                    outs.append({"output_type": t})
            c["outputs"] = outs
            c["streams"] = streams
        cells.append(c)
    return cells


class NbClient(unittest.TestCase):

    def jupyter_nbclient_matches_ipykernel(self):
        work = tempfile.mkdtemp(prefix="khj-nb-")
        self.addCleanup(shutil.rmtree, work, True)
        want = normalise(execute(REFERENCE, work))
        got = normalise(execute(wire.KERNEL_NAME, work))
        # The reference itself must show what the notebook is there to exercise.
        kinds = {o["output_type"] for c in want for o in c.get("outputs", [])}
        self.assertEqual(kinds, {"execute_result", "display_data", "error"})
        mimes = set().union(*(o.get("data", {}).keys() for c in want for o in c.get("outputs", [])))
        self.assertTrue({"text/html", "image/png", "text/plain"} <= mimes)
        self.assertEqual({n for c in want for n in c.get("streams", {})}, {"stdout", "stderr"})
        self.maxDiff = None
        self.assertEqual(len(got), len(want))
        for i, (g, w) in enumerate(zip(got, want)):
            with self.subTest(cell=i, source=w["source"].split("\n")[0]):
                self.assertEqual(g, w)
