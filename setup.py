"""pyexec: a Linux container executor library. ``pip install .`` compiles the C
shim via cffi and links the per-task monitor program (pyexec/pyexec-monitor)."""
import importlib.util
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


class BuildExtAndMonitor(build_ext):
    """build_ext (the cffi module), then the monitor executable next to it."""

    def run(self):
        super().run()
        spec = importlib.util.spec_from_file_location("_build_monitor", HERE / "pyexec" / "_build_monitor.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        target = HERE / "pyexec" if self.inplace else Path(self.build_lib) / "pyexec"
        self.monitor = module.build_monitor(target, Path(self.build_temp) / "monitor")

    def get_outputs(self):
        return super().get_outputs() + [str(self.monitor)] if hasattr(self, "monitor") else super().get_outputs()

setup(
    name="pyexec",
    version="0.1.0",
    description="Run tasks isolated in Linux namespaces and limited by cgroups, from Python",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pyexec", "pyexec.*"]),
    package_data={"pyexec": ["py.typed", "pyexec-monitor"]},
    cmdclass={"build_ext": BuildExtAndMonitor},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["pyexec/_build_shim.py:ffibuilder"],
    install_requires=[
        "cffi>=1.15",
        "psutil>=5.9",
        "python-prctl>=1.8",
        "cgroupspy>=0.2",
        "pyroute2>=0.7",
    ],
    extras_require={
        "test": ["pytest>=7"],
        # The static checks of `libexec/dev test`; not needed to run the tests (the VM has none).
        "lint": ["mypy==2.4.1", "ruff==0.17.6", "types-psutil==7.2.2.20261122", "types-cffi==2.1.0.20261122"],
    },
    entry_points={"console_scripts": ["pyexec=pyexec.cli:main", "pyexec-oci=pyexec.oci.cli:main"]},
    classifiers=[
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
    ],
)
