"""pyexec: a Linux container executor library. ``pip install .`` compiles the C shim via cffi."""
from setuptools import find_packages, setup

setup(
    name="pyexec",
    version="0.1.0",
    description="Run tasks isolated in Linux namespaces and limited by cgroups, from Python",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pyexec", "pyexec.*"]),
    package_data={"pyexec": ["py.typed"]},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["pyexec/_build_shim.py:ffibuilder"],
    install_requires=[
        "cffi>=1.15",
        "psutil>=5.9",
        "python-prctl>=1.8",
        "cgroupspy>=0.2",
        "pyroute2>=0.7",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["pyexec=pyexec.cli:main"]},
    classifiers=[
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
    ],
)
