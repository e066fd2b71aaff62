"""AppTest: the pages on tiny `ddpm` and `mlp_gan` runs (Samples: sampler widgets and images; Style mixing: the
StyleGAN-only note; Train: the family section and the diffusion curves)."""
from tests.pages.apptest import open_app

from engine.utils import runs_root
from tests.fixtures_ddpm import make_ddpm_run


def test_samples_page_on_a_ddpm_run(monkeypatch):
    make_ddpm_run(runs_root())
    at = open_app(monkeypatch, "pages/samples.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="samples_ddpm_sampler").value == "ddim"       # the run's own sampler
    assert at.number_input(key="samples_ddpm_sample_steps").value == 2
    assert len(at.get("image")) == 2 * 9          # one row per class, its real tiles beside it
    assert any("sampler ddim" in c.value and "steps 2" in c.value for c in at.caption)
    first = at.session_state["samples_result"]["images"].copy()
    at.selectbox(key="samples_ddpm_sampler").set_value("dpm")
    at.number_input(key="samples_ddpm_guidance").set_value(0.0)
    at.multiselect[0].set_value(["ADI", "TUM"])
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 2 * 2
    assert any("sampler dpm" in c.value and "guidance 0" in c.value for c in at.caption)
    assert at.session_state["samples_result"]["images"].shape[0] == 2 * 8 < first.shape[0]


def test_style_mixing_page_says_stylegan_only(monkeypatch):
    make_ddpm_run(runs_root())
    at = open_app(monkeypatch, "pages/style_mixing.py").run()
    assert not at.exception, at.exception
    assert any("StyleGAN-only" in i.value for i in at.info)
    assert not at.get("image")


def test_train_page_ddpm_section_and_curves(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    make_ddpm_run(runs_root())
    at = open_app(monkeypatch, "pages/train.py", run_first=True).run()
    assert not at.exception, at.exception
    charts = at.get("plotly_chart")
    assert charts  # the diffusion curves of metrics_diffusion.csv
    titles = " ".join(str(c.proto.spec) for c in charts)
    assert "Loss per timestep quartile" in titles and "Gradient norm" in titles
    # the form: picking ddpm shows its section (the demo preset's values), and Start sends it
    at.selectbox(key="cfg_family").set_value("ddpm").run()
    assert not at.exception, at.exception
    assert at.number_input(key="cfg_ddpm_channels").value == 32
    assert at.number_input(key="cfg_ddpm_channels").label == "U-Net base channels · channels"
    assert not any(w.key == "cfg_r1_gamma" for w in at.number_input)  # the GAN sections give way
    started = []
    from engine import config as C
    from engine import jobs

    monkeypatch.setattr(jobs, "start", lambda config, run_id=None, root=None: started.append(
        C.from_dict(C.TrainConfig, config)) or "fake")
    at.number_input(key="cfg_ddpm_channels").set_value(64)
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    assert started and started[-1].family == "ddpm" and started[-1].ddpm["channels"] == 64


def test_mlp_gan_run_samples_and_balance_note(monkeypatch):
    import torch

    from engine.train.logging import CSV_COLUMNS, MetricsCSV
    from tests.fixtures_ddpm import make_mlp_gan_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    d = make_mlp_gan_run(runs_root())
    at = open_app(monkeypatch, "pages/samples.py").run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 2 * 9 and not any(w.key == "samples_cfg_truncation" for w in at.slider)
    assert any("StyleGAN-only" in c.value for c in at.caption)
    # hand-made curves where D's loss collapses while G's rises: the tutorial's "D too strong"
    (d / "metrics_gan.csv").unlink()
    with MetricsCSV(d / "metrics_gan.csv", extras=("g_total",)) as csv:
        for i in range(20):
            csv.write({"step": i + 1, "kimg": (i + 1) * 0.008, "d_loss": 1.2 - 0.06 * i if i < 10 else 0.05,
                       "g_loss": 0.8 + 0.2 * i})
    at = open_app(monkeypatch, "pages/train.py", run_first=True).run()
    assert not at.exception, at.exception
    assert any("D too strong" in w.value for w in at.warning)
    assert tuple(CSV_COLUMNS)[:4] == ("epoch", "step", "kimg", "d_loss")
