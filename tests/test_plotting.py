"""save_figure: every format, folders created, byte-identical reruns."""

from __future__ import annotations

from tinygpt_mlx.plotting import new_figure, save_figure


def test_save_figure_writes_each_format_reproducibly(tmp_path):
    def draw():
        fig, ax = new_figure()
        ax.plot([1, 2, 3], [3, 1, 2])
        return fig

    first = save_figure(draw(), tmp_path / "a" / "b", "curve")
    assert first == [tmp_path / "a" / "b" / "curve.png", tmp_path / "a" / "b" / "curve.svg"]
    assert first[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in first[1].read_bytes() and b"<dc:date>" not in first[1].read_bytes()
    again = save_figure(draw(), tmp_path / "c", "curve")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in first]
    assert save_figure(draw(), tmp_path, "only", ("png",)) == [tmp_path / "only.png"]


def test_new_figure_side_by_side_axes():
    fig, axes = new_figure(ncols=2)
    assert len(axes) == 2 and fig.get_layout_engine() is not None
