"""The one error of `keelctl install`: a refusal or a failure, said in a sentence."""


class InstallError(Exception):
    pass
