package builder

import (
	"path"
	"strings"
)

// The java stack: Debian's OpenJDK 17 JRE (headless) and Jetty 9.4's jars
// (libjetty9-java: Servlet 3.1, no JSP), without Debian's jetty9 service
// package, whose start.jar module system, JSP compiler (Eclipse JDT,
// Tomcat's Jasper), Spring and Perl cost ~30 MB compressed. A war runs
// under a fixed Jetty XML configuration (one HTTP connector on $PORT, the
// war's WebAppContext at /) through Jetty's own XmlConfiguration main.

// jettyDir holds the java stack's Jetty configuration.
const jettyDir = "/usr/local/share/dinp/jetty"

// jettyJars are the Jetty jars (in /usr/share/java) a war needs: server,
// servlet, webapp and the XML configuration that wires them.
var jettyJars = []string{"jetty9-server", "jetty9-http", "jetty9-io", "jetty9-util", "jetty9-xml",
	"jetty9-webapp", "jetty9-servlet", "jetty9-security", "servlet-api"}

// jettyXML starts a server with one HTTP connector on jetty.http.port and
// the war named by dinp.war at /. A war that fails to start stops the JVM
// (the instance crashes visibly instead of answering 503).
const jettyXML = `<?xml version="1.0"?>
<!DOCTYPE Configure PUBLIC "-//Jetty//Configure//EN" "http://www.eclipse.org/jetty/configure_9_3.dtd">
<Configure id="Server" class="org.eclipse.jetty.server.Server">
  <Call name="addConnector">
    <Arg>
      <New class="org.eclipse.jetty.server.ServerConnector">
        <Arg name="server"><Ref refid="Server"/></Arg>
        <Set name="port"><Property name="jetty.http.port" default="8080"/></Set>
      </New>
    </Arg>
  </Call>
  <Set name="handler">
    <New class="org.eclipse.jetty.webapp.WebAppContext">
      <Set name="contextPath">/</Set>
      <Set name="war"><Property name="dinp.war"/></Set>
      <Set name="throwUnavailableOnStartupException">true</Set>
    </New>
  </Set>
  <Set name="stopAtShutdown">true</Set>
</Configure>
`

// javaHook finishes the java stack's root: Jetty's configuration, and
// without what a headless server JVM never loads: the class-data archive
// for heaps over 32 GB, javac's ct.sym, and the print (CUPS), sound (ALSA)
// and smart-card libraries with what only they pulled in. dpkg refuses to
// remove anything another remaining package still needs.
var javaHook = `mkdir -p "$1` + jettyDir + `" && printf '%s' '` + jettyXML + `' > "$1` + jettyDir + `/jetty.xml" && ` +
	`rm -f "$1"/usr/lib/jvm/java-17-openjdk-*/lib/server/classes_nocoops.jsa "$1"/usr/lib/jvm/java-17-openjdk-*/lib/ct.sym && ` +
	`chroot "$1" dpkg --purge --force-depends libcups2 libasound2 libpcsclite1 >/dev/null && ` +
	`for p in libavahi-client3 libavahi-common3 libavahi-common-data libdbus-1-3 libasound2-data libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libgnutls30 libp11-kit0 libtasn1-6 libidn2-0 libunistring2 libhogweed6 libnettle8 libffi8; do chroot "$1" dpkg --purge "$p" >/dev/null 2>&1 || true; done`

// javaClasspath is the war runner's class path.
func javaClasspath() []string {
	cp := make([]string, len(jettyJars))
	for i, j := range jettyJars {
		cp[i] = "/usr/share/java/" + j + ".jar"
	}
	return cp
}

// warCommand runs the war at / under the stack's Jetty.
func warCommand(war string) string {
	return `exec java -cp ` + strings.Join(javaClasspath(), ":") + ` org.eclipse.jetty.xml.XmlConfiguration jetty.http.port="${PORT:-8080}" dinp.war=` +
		shellQuote(path.Join(AppDir, war)) + ` ` + jettyDir + `/jetty.xml`
}
